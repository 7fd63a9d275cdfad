import { canonicalParts } from '../../audit/chain.js';
import { canonicalJson } from '../../shared/canonical-json.js';
import { toIso, type Clock } from '../../shared/clock.js';
import type { AdmissionFacts, AdmissionProbe, RequestChange, RequestState, Store, TransitionFields } from '../contract.js';
import type { AuditEntry, AuditEventRecord, IssuanceRecord, RequestRecord, RequestStatus } from '../records.js';
import {
  toApproval,
  toEvent,
  toIssuance,
  toIssuanceAudit,
  toKey,
  toRequest,
  toReview,
  type ApprovalRow,
  type EventRow,
  type IssuanceAuditRow,
  type IssuanceRow,
  type KeyRow,
  type RequestRow,
  type ReviewRow,
} from '../rows.js';
import { atLimit, holderKeys, identityHolder, isLive, jobKey, LIVE_SQL, loadDelta, MINUTE_MS, minuteStart, transitionColumns } from '../shared.js';
import { createBatcher, type Emit } from './batch.js';
import type { Pool, Query } from './client.js';

/** Signing keys change under this lock, so two replicas sharing a key directory rotate once. */
const KEYS_LOCK = 7596286014052352342n;
/** Conditional appends (`appendIfLatest`) judge and write under this lock, taken before the chain's. */
const APPEND_IF_LATEST_LOCK = 7596286014052352343n;

/**
 * The PostgreSQL engine, for several broker replicas on one database. Each change is one
 * READ COMMITTED transaction that first takes the locks its checks need: transaction-scoped
 * advisory locks per holder (identity, person) for admissions, so two replicas never judge the
 * same caller's separation, quota or limits at once; the request's row (FOR UPDATE) for a change
 * to one request; SKIP LOCKED batches for sweeps, so replicas split the due work. Events go
 * through `append_audit_events`, which takes the chain's lock last and holds it to commit: one
 * chain, no gaps, whatever the number of replicas. Locks are always taken in that order
 * (holders or rows, then the chain), so transactions never wait on each other in a cycle.
 */
export function createPostgresStore(pool: Pool, clock: Clock): Store {
  // Admissions, changes and plain appends are group-committed; the rarer maintenance operations
  // (keys, sweeps) take their own transactions.
  const batcher = createBatcher(pool, (query, entries) => appendEvents(query, entries));
  const marks = (from: number, n: number) => Array.from({ length: n }, (_, i) => `$${from + i}`).join(', ');

  // ---- reads, on the pool or inside a transaction ----

  async function states(query: Query, requests: readonly RequestRecord[]): Promise<RequestState[]> {
    if (requests.length === 0) return [];
    const ids = requests.map((r) => r.id);
    const [approvals, reviews, issuances] = await Promise.all([
      query<ApprovalRow>('SELECT * FROM approvals WHERE request_id = ANY($1) ORDER BY at, approver_iss, approver_sub', [ids]),
      query<ReviewRow>('SELECT * FROM break_glass_reviews WHERE request_id = ANY($1)', [ids]),
      query<IssuanceRow>('SELECT * FROM issuances WHERE request_id = ANY($1)', [ids]),
    ]);
    return requests.map((request) => ({
      request,
      approvals: approvals.filter((a) => a.request_id === request.id).map(toApproval),
      review: reviews.filter((r) => r.request_id === request.id).map(toReview)[0],
      issuance: issuances.filter((i) => i.request_id === request.id).map(toIssuance)[0],
    }));
  }

  const activeKeys = async (query: Query) =>
    (await query<KeyRow>('SELECT * FROM signing_keys WHERE retired_at IS NULL ORDER BY activates_at DESC, created_at DESC, kid DESC')).map(toKey);

  // ---- writes, inside a transaction ----

  /** Appends events to the chain (the last thing a transaction does: it takes the chain's lock). */
  async function appendEvents(query: Query, entries: readonly AuditEntry[]): Promise<AuditEventRecord[]> {
    if (entries.length === 0) return [];
    const at = toIso(clock());
    const events = entries.map((entry) => ({
      at,
      type: entry.type,
      actor: entry.actor ? { iss: entry.actor.iss, sub: entry.actor.sub } : null,
      requestId: entry.requestId ?? null,
      data: entry.data ?? {},
    }));
    const sealed = await query<{ seq: number; prev_hash: string; hash: string }>('SELECT seq, prev_hash, hash FROM append_audit_events($1::jsonb)', [
      JSON.stringify(
        events.map((event) => ({
          ...canonicalParts(event),
          at: event.at,
          type: event.type,
          actor_iss: event.actor?.iss ?? null,
          actor_sub: event.actor?.sub ?? null,
          request_id: event.requestId,
          data: canonicalJson(event.data),
        })),
      ),
    ]);
    return events.map((event, i) => {
      const { seq, prev_hash: prevHash, hash } = sealed[i] as (typeof sealed)[number];
      return { ...event, seq, prevHash, hash };
    });
  }

  async function insertIssuance(query: Query, i: IssuanceRecord, scopes: readonly string[]): Promise<void> {
    await query('INSERT INTO issuances (jti, request_id, token_sha256, kid, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)', [
      i.jti, i.requestId, i.tokenSha256, i.kid, i.issuedAt, i.expiresAt,
    ]);
    await query('INSERT INTO issued_scopes (scope, issued_at, request_id) SELECT s, $2, $3 FROM unnest($1::text[]) s', [
      scopes, i.issuedAt, i.requestId,
    ]);
  }

  async function transition(
    query: Query,
    request: RequestRecord,
    from: readonly RequestStatus[],
    to: RequestStatus,
    fields: TransitionFields = {},
  ): Promise<void> {
    const columns = transitionColumns(fields);
    const assignments = columns.map(([column], i) => `, ${column} = $${4 + i}`).join('');
    const changed = await query(`UPDATE requests SET status = $1${assignments} WHERE id = $2 AND status = ANY($3) RETURNING id`, [
      to, request.id, from, ...columns.map(([, value]) => value),
    ]);
    // The row is locked by this transaction: a mismatch is a defect, never a race.
    if (changed.length !== 1) throw new Error(`request ${request.id} is ${request.status}, not ${from.join('|')}`);
  }

  /** Moves a batch of locked, due requests to `expired` in one statement. */
  async function expire(query: Query, requests: readonly RequestRecord[], now: number): Promise<void> {
    if (requests.length === 0) return;
    const changed = await query(`UPDATE requests SET status = 'expired', ended_at = $1 WHERE id = ANY($2) AND status IN ${LIVE_SQL} RETURNING id`, [
      now,
      requests.map((r) => r.id),
    ]);
    if (changed.length !== requests.length) throw new Error('a locked request changed status during its sweep');
  }

  /** After transitions: the holders' counts, and the separation index of requests no longer live. */
  async function settle(query: Query, moves: readonly { request: RequestRecord; to: RequestStatus }[]): Promise<void> {
    const deltas = new Map<string, { live: number; pending: number }>();
    const ended: string[] = [];
    for (const { request, to } of moves) {
      const { live, pending } = loadDelta(request.status, to);
      if (live < 0) ended.push(request.id);
      if (live === 0 && pending === 0) continue;
      for (const holder of holderKeys(request.requester, request.person)) {
        const sum = deltas.get(holder) ?? { live: 0, pending: 0 };
        deltas.set(holder, { live: sum.live + live, pending: sum.pending + pending });
      }
    }
    await adjustLoad(query, deltas);
    if (ended.length > 0) await query('DELETE FROM live_scopes WHERE request_id = ANY($1)', [ended]);
  }

  /** Takes the holders' locks, in a fixed order: one judgement per caller at a time, on every replica. */
  async function lockHolders(query: Query, holders: string[]): Promise<void> {
    // One round trip; the rows come to the lock function in key order from the sorted subquery.
    await query('SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM (SELECT k FROM unnest($1::text[]) k ORDER BY k) sorted', [holders]);
  }

  async function admissionFacts(query: Query, probe: AdmissionProbe): Promise<AdmissionFacts> {
    const minute = minuteStart(probe.now);
    const { identity, person } = probe.holders;
    const holders = holderKeys(identity, person);
    const [identityKey, personKey = null] = holders;
    // One round trip, and every part of it an index probe: none grows with the caller's history.
    const [facts] = await query<{
      minute_rows: { holder: string; requests: number; refusals_recorded: number }[] | null;
      load_rows: { holder: string; live: number; pending: number }[] | null;
      conflict: { id: string; scopes: string; holder: string } | null;
      bg_identity: { count: number; oldest: number | null } | null;
      bg_person: { count: number; oldest: number | null } | null;
    }>(
      `SELECT
         (SELECT json_agg(json_build_object('holder', holder, 'requests', requests, 'refusals_recorded', refusals_recorded))
            FROM caller_minutes WHERE holder = ANY($1) AND minute = $2) AS minute_rows,
         (SELECT json_agg(json_build_object('holder', holder, 'live', live, 'pending', pending))
            FROM holder_load WHERE holder = ANY($1)) AS load_rows,
         -- LATERAL keeps live_scopes first: the conflicting scopes' few rows, never every live request.
         (SELECT json_build_object('id', r.id, 'scopes', r.scopes, 'holder', l.holder)
            FROM live_scopes l
            CROSS JOIN LATERAL (SELECT id, scopes FROM requests
                                 WHERE id = l.request_id AND status IN ${LIVE_SQL} AND expires_at > $4) r
           WHERE l.holder = ANY($1) AND l.scope = ANY($3) LIMIT 1) AS conflict,
         CASE WHEN $5::boolean THEN
           (SELECT json_build_object('count', count(*), 'oldest', min(issued_at)) FROM
              (SELECT issued_at FROM requests WHERE requester_iss = $8 AND requester_sub = $9 AND break_glass AND issued_at > $6 LIMIT $7) b)
         END AS bg_identity,
         CASE WHEN $5::boolean AND $10::text IS NOT NULL THEN
           (SELECT json_build_object('count', count(*), 'oldest', min(issued_at)) FROM
              (SELECT issued_at FROM requests WHERE person = $10 AND break_glass AND issued_at > $6 LIMIT $7) b)
         END AS bg_person`,
      [
        holders, minute, probe.conflicting, probe.now, probe.breakGlass !== undefined, probe.breakGlass?.since ?? 0,
        probe.breakGlass?.cap ?? 0, identity.iss, identity.sub, personKey,
      ],
    );
    const minutes = facts?.minute_rows ?? [];
    const loads = facts?.load_rows ?? [];
    const mine = minutes.find((r) => r.holder === identityKey);
    const load = (holder: string | null) => loads.find((r) => r.holder === holder);
    const result: AdmissionFacts = {
      requestsThisMinute: { identity: mine?.requests ?? 0, person: minutes.find((r) => r.holder === personKey)?.requests ?? 0 },
      minuteEndsAt: minute + MINUTE_MS,
      refusalsRecorded: mine?.refusals_recorded ?? 0,
      live: { identity: load(identityKey ?? null)?.live ?? 0, person: load(personKey)?.live ?? 0 },
      pending: { identity: load(identityKey ?? null)?.pending ?? 0, person: load(personKey)?.pending ?? 0 },
    };
    if (atLimit(result, probe)) {
      const [soonest] = await query<{ at: number | null }>(
        `SELECT least(
           (SELECT min(expires_at) FROM requests WHERE requester_iss = $1 AND requester_sub = $2 AND status IN ${LIVE_SQL}),
           (SELECT min(expires_at) FROM requests WHERE person = $3 AND status IN ${LIVE_SQL})) AS at`,
        [identity.iss, identity.sub, personKey],
      );
      result.soonestEnd = soonest?.at ?? null;
    }
    if (facts?.conflict) {
      result.conflict = {
        requestId: facts.conflict.id,
        scopes: JSON.parse(facts.conflict.scopes) as string[],
        byPerson: facts.conflict.holder !== identityKey,
      };
    }
    if (probe.breakGlass) {
      result.breakGlass = {
        identity: { count: facts?.bg_identity?.count ?? 0, oldest: facts?.bg_identity?.oldest ?? null },
        person: { count: facts?.bg_person?.count ?? 0, oldest: facts?.bg_person?.oldest ?? null },
      };
    }
    return result;
  }

  /** Changes holders' counts, locking their rows in a fixed order (no two transactions wait on each other in a cycle). */
  async function adjustLoad(query: Query, deltas: ReadonlyMap<string, { live: number; pending: number }>): Promise<void> {
    const holders = [...deltas.keys()].sort();
    if (holders.length === 0) return;
    await query(
      `INSERT INTO holder_load (holder, live, pending)
       SELECT holder, live, pending FROM unnest($1::text[], $2::int[], $3::int[]) AS d (holder, live, pending) ORDER BY holder
       ON CONFLICT (holder) DO UPDATE SET live = holder_load.live + excluded.live, pending = holder_load.pending + excluded.pending`,
      [holders, holders.map((h) => deltas.get(h)?.live ?? 0), holders.map((h) => deltas.get(h)?.pending ?? 0)],
    );
  }

  async function countRequest(query: Query, probe: AdmissionProbe, refusal: 'recorded' | 'counted' | undefined): Promise<void> {
    const minute = minuteStart(probe.now);
    const { identity, person } = probe.holders;
    await query(
      `INSERT INTO caller_minutes (holder, minute, requests, refusals_recorded, refusals_counted, actor_iss, actor_sub)
       VALUES ($1, $2, 1, $3, $4, $5, $6)
       ON CONFLICT (holder, minute) DO UPDATE SET requests = caller_minutes.requests + 1,
         refusals_recorded = caller_minutes.refusals_recorded + excluded.refusals_recorded,
         refusals_counted = caller_minutes.refusals_counted + excluded.refusals_counted`,
      [identityHolder(identity), minute, refusal === 'recorded' ? 1 : 0, refusal === 'counted' ? 1 : 0, identity.iss, identity.sub],
    );
    if (person !== null) {
      await query(
        `INSERT INTO caller_minutes (holder, minute, requests) VALUES ($1, $2, 1)
         ON CONFLICT (holder, minute) DO UPDATE SET requests = caller_minutes.requests + 1`,
        [person, minute],
      );
    }
  }

  /**
   * Everything an admitted request writes, in one statement (data-modifying CTEs): its rows, its
   * scopes in the separation index, its holders' counts and this minute's rate. One round trip
   * instead of eight is most of an admission's time on a network.
   */
  async function admitWrites(
    query: Query,
    probe: AdmissionProbe,
    r: RequestRecord,
    issuance: IssuanceRecord | undefined,
    reviewDueAt: number | undefined,
  ): Promise<void> {
    const minute = minuteStart(probe.now);
    const { identity, person } = probe.holders;
    const holders = holderKeys(r.requester, r.person);
    const live = isLive(r.status);
    await query(
      `WITH minutes AS (
         INSERT INTO caller_minutes (holder, minute, requests, refusals_recorded, refusals_counted, actor_iss, actor_sub)
         SELECT h, $26, 1, 0, 0, CASE WHEN n = 1 THEN $27 END, CASE WHEN n = 1 THEN $28 END
         FROM unnest($29::text[]) WITH ORDINALITY AS m (h, n)
         ON CONFLICT (holder, minute) DO UPDATE SET requests = caller_minutes.requests + 1),
       request AS (
         INSERT INTO requests (id, requester_iss, requester_sub, requester_idp, initiator, person, job, task_id, scopes,
           audience, ttl_seconds, justification, break_glass, policy_ids, digest, approvals_required, status, created_at,
           expires_at, decided_at, issued_at, ended_at, revoke_reason, revoked_by_iss, revoked_by_sub)
         VALUES (${marks(1, 25)})),
       scopes AS (
         INSERT INTO live_scopes (holder, scope, request_id)
         SELECT h, s, $1 FROM unnest($30::text[]) h, unnest($31::text[]) s WHERE $32),
       load AS (
         INSERT INTO holder_load (holder, live, pending)
         SELECT h, 1, $33 FROM (SELECT h FROM unnest($30::text[]) h ORDER BY h) sorted WHERE $32
         ON CONFLICT (holder) DO UPDATE SET live = holder_load.live + 1, pending = holder_load.pending + excluded.pending),
       review AS (
         INSERT INTO break_glass_reviews (request_id, due_at) SELECT $1, $34::bigint WHERE $34::bigint IS NOT NULL),
       issuance AS (
         INSERT INTO issuances (jti, request_id, token_sha256, kid, issued_at, expires_at)
         SELECT $35, $1, $36, $37, $38::bigint, $39::bigint WHERE $35::text IS NOT NULL),
       issued AS (
         INSERT INTO issued_scopes (scope, issued_at, request_id)
         SELECT s, $38::bigint, $1 FROM unnest($31::text[]) s WHERE $35::text IS NOT NULL)
       SELECT 1`,
      [
        r.id, r.requester.iss, r.requester.sub, r.requesterIdp, r.initiator, r.person, jobKey(r.boundClaims), r.taskId,
        JSON.stringify(r.scopes), r.audience, r.ttlSeconds, r.justification, r.breakGlass, JSON.stringify(r.policyIds),
        r.digest, r.approvalsRequired, r.status, r.createdAt, r.expiresAt, r.decidedAt, r.issuedAt, r.endedAt,
        r.revokeReason, r.revokedBy?.iss ?? null, r.revokedBy?.sub ?? null,
        minute, identity.iss, identity.sub, holderKeys(identity, person),
        holders, r.scopes, live, r.status === 'pending_approval' ? 1 : 0,
        reviewDueAt ?? null,
        issuance?.jti ?? null, issuance?.tokenSha256 ?? null, issuance?.kid ?? null, issuance?.issuedAt ?? null, issuance?.expiresAt ?? null,
      ],
    );
  }

  async function lockedState(query: Query, id: string): Promise<RequestState | undefined> {
    const [row] = await query<RequestRow>('SELECT * FROM requests WHERE id = $1 FOR UPDATE', [id]);
    return row ? (await states(query, [toRequest(row)]))[0] : undefined;
  }

  async function applyChange<R>(query: Query, emit: Emit, state: RequestState | undefined, change: RequestChange<R>): Promise<R> {
    if (change.transition) {
      if (!state) throw new Error('a transition needs a request');
      await transition(query, state.request, change.transition.from, change.transition.to, change.transition.fields);
      await settle(query, [{ request: state.request, to: change.transition.to }]);
    }
    if (change.approval) {
      const a = change.approval;
      await query(
        `INSERT INTO approvals (request_id, approver_iss, approver_sub, person, decision, reason, digest, at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
        [a.requestId, a.approver.iss, a.approver.sub, a.person, a.decision, a.reason, a.digest, a.at],
      );
    }
    if (change.issuance) await insertIssuance(query, change.issuance, state?.request.scopes ?? []);
    if (change.review) {
      const { outcome, notes, reviewer, at } = change.review;
      const changed = await query(
        `UPDATE break_glass_reviews SET outcome = $1, notes = $2, reviewer_iss = $3, reviewer_sub = $4, reviewed_at = $5
         WHERE request_id = $6 AND outcome IS NULL RETURNING request_id`,
        [outcome, notes, reviewer.iss, reviewer.sub, at, state?.request.id],
      );
      if (changed.length !== 1) throw new Error(`review of ${state?.request.id} is not pending`);
    }
    emit(change.events);
    return change.result;
  }

  return {
    engine: 'postgres',

    requests: {
      async get(id) {
        const [row] = await pool.query<RequestRow>('SELECT * FROM requests WHERE id = $1', [id]);
        return row ? toRequest(row) : undefined;
      },
      async state(id) {
        const [row] = await pool.query<RequestRow>('SELECT * FROM requests WHERE id = $1', [id]);
        return row ? (await states(pool.query, [toRequest(row)]))[0] : undefined;
      },
      states: (requests) => states(pool.query, requests),
      async owned(owner, filter, after, limit) {
        const where = ['requester_iss = $1', 'requester_sub = $2', 'job = $3', '(created_at, id) < ($4, $5)'];
        const params: unknown[] = [owner.iss, owner.sub, jobKey(owner.boundClaims), after?.createdAt ?? Number.MAX_SAFE_INTEGER, after?.id ?? ''];
        const next = () => `$${params.length + 1}`;
        if (filter.status === 'expired') {
          where.push(`(status = 'expired' OR (status IN ${LIVE_SQL} AND expires_at <= ${next()}))`);
          params.push(filter.now);
        } else if (filter.status !== undefined && isLive(filter.status)) {
          where.push(`status = ${next()}`);
          params.push(filter.status);
          where.push(`expires_at > ${next()}`);
          params.push(filter.now);
        } else if (filter.status !== undefined) {
          where.push(`status = ${next()}`);
          params.push(filter.status);
        }
        params.push(limit);
        return (
          await pool.query<RequestRow>(
            `SELECT * FROM requests WHERE ${where.join(' AND ')} ORDER BY created_at DESC, id DESC LIMIT $${params.length}`,
            params,
          )
        ).map(toRequest);
      },
      pending: async (now, after, limit) =>
        (
          await pool.query<RequestRow>(
            `SELECT * FROM requests WHERE status = 'pending_approval' AND expires_at > $1
               AND (created_at, id) > ($2, $3) ORDER BY created_at, id LIMIT $4`,
            [now, after?.createdAt ?? -1, after?.id ?? '', limit],
          )
        ).map(toRequest),
    },

    issuances: {
      async get(jti) {
        const [row] = await pool.query<IssuanceRow>('SELECT * FROM issuances WHERE jti = $1', [jti]);
        return row ? toIssuance(row) : undefined;
      },
      revokedUnexpired: async (now, afterJti, limit) =>
        (
          await pool.query<IssuanceRow>(
            `SELECT i.* FROM issuances i JOIN requests r ON r.id = i.request_id
             WHERE r.status = 'revoked' AND i.expires_at > $1 AND i.jti > $2 ORDER BY i.jti LIMIT $3`,
            [now, afterJti ?? '', limit],
          )
        ).map(toIssuance),
    },

    reviews: {
      list: async (state, after, limit) =>
        (
          await pool.query<RequestRow & { due_at: number }>(
            `SELECT r.*, b.due_at FROM break_glass_reviews b JOIN requests r ON r.id = b.request_id
             WHERE b.outcome IS ${state === 'pending' ? '' : 'NOT '}NULL AND (b.due_at, b.request_id) > ($1, $2)
             ORDER BY b.due_at, b.request_id LIMIT $3`,
            [after?.dueAt ?? -1, after?.requestId ?? '', limit],
          )
        ).map((r) => ({ request: toRequest(r), dueAt: r.due_at })),
      async pendingCounts() {
        const [counts] = await pool.query<{ pending: number; overdue: number }>(
          'SELECT count(*) AS pending, count(overdue_at) AS overdue FROM break_glass_reviews WHERE outcome IS NULL',
        );
        return { pending: counts?.pending ?? 0, overdue: counts?.overdue ?? 0 };
      },
    },

    events: {
      async head() {
        const [head] = await pool.query<{ seq: number; hash: string }>('SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1');
        return head;
      },
      after: async (afterSeq, limit) =>
        (await pool.query<EventRow>('SELECT * FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2', [afterSeq, limit])).map(toEvent),
      async at(seq) {
        const [row] = await pool.query<EventRow>('SELECT * FROM audit_events WHERE seq = $1', [seq]);
        return row ? toEvent(row) : undefined;
      },
      async latest(type) {
        const [row] = await pool.query<EventRow>('SELECT * FROM audit_events WHERE type = $1 ORDER BY seq DESC LIMIT 1', [type]);
        return row ? toEvent(row) : undefined;
      },
    },

    audit: {
      async issuances(filter, after, limit, now) {
        // As the SQLite engine: every filter walks an index in (issued_at, request id) order.
        const byScope = filter.scope !== undefined && filter.subject === undefined;
        const [source, issuedAt, id] = byScope
          ? ['issued_scopes s JOIN requests r ON r.id = s.request_id', 's.issued_at', 's.request_id']
          : ['requests r', 'r.issued_at', 'r.id'];
        const params: unknown[] = [now, after?.issuedAt ?? -1, after?.requestId ?? ''];
        const where = [`${issuedAt} IS NOT NULL AND (${issuedAt}, ${id}) > ($2, $3)`];
        const add = (clause: (p: string) => string, value: unknown) => {
          params.push(value);
          where.push(clause(`$${params.length}`));
        };
        if (byScope) add((p) => `s.scope = ${p}`, filter.scope);
        else if (filter.scope !== undefined) {
          add((p) => `EXISTS (SELECT 1 FROM issued_scopes s WHERE s.scope = ${p} AND s.issued_at = r.issued_at AND s.request_id = r.id)`, filter.scope);
        }
        if (filter.since !== undefined) add((p) => `${issuedAt} >= ${p}`, filter.since);
        if (filter.until !== undefined) add((p) => `${issuedAt} < ${p}`, filter.until);
        if (filter.subject !== undefined) add((p) => `r.requester_sub = ${p}`, filter.subject);
        if (filter.breakGlass !== undefined) where.push(filter.breakGlass ? 'r.break_glass' : 'NOT r.break_glass');
        if (filter.status === 'issued') where.push(`r.status = 'issued' AND r.expires_at > $1`);
        if (filter.status === 'expired') where.push(`(r.status = 'expired' OR (r.status = 'issued' AND r.expires_at <= $1))`);
        if (filter.status === 'revoked') where.push(`r.status = 'revoked'`);
        params.push(limit);
        return (
          await pool.query<IssuanceAuditRow>(
            `SELECT i.jti, r.id AS request_id, r.issued_at, i.expires_at, r.requester_iss, r.requester_sub, r.task_id, r.scopes,
                    r.audience, r.justification, r.break_glass, r.ended_at, r.revoke_reason,
                    CASE WHEN r.status = 'issued' AND i.expires_at <= $1 THEN 'expired' ELSE r.status END AS status,
                    (SELECT coalesce(json_agg(json_build_object('iss', a.approver_iss, 'sub', a.approver_sub, 'at', a.at) ORDER BY a.at), '[]')::text
                       FROM approvals a WHERE a.request_id = r.id AND a.decision = 'approve') AS approvers
             FROM ${source} JOIN issuances i ON i.request_id = r.id
             WHERE ${where.join(' AND ')}
             ORDER BY ${issuedAt}, ${id} LIMIT $${params.length}`,
            params,
          )
        ).map(toIssuanceAudit);
      },
      async events(filter, afterSeq, limit) {
        const params: unknown[] = [afterSeq];
        const where = ['seq > $1'];
        const add = (clause: string, value: unknown) => {
          params.push(value);
          where.push(`${clause} $${params.length}`);
        };
        if (filter.since !== undefined) add('at >=', filter.since);
        if (filter.until !== undefined) add('at <', filter.until);
        if (filter.type !== undefined) add('type =', filter.type);
        if (filter.requestId !== undefined) add('request_id =', filter.requestId);
        params.push(limit);
        return (
          await pool.query<EventRow>(`SELECT * FROM audit_events WHERE ${where.join(' AND ')} ORDER BY seq LIMIT $${params.length}`, params)
        ).map(toEvent);
      },
    },

    keys: {
      active: () => activeKeys(pool.query),
      async get(kid) {
        const [row] = await pool.query<KeyRow>('SELECT * FROM signing_keys WHERE kid = $1', [kid]);
        return row ? toKey(row) : undefined;
      },
      add: (decide, event) =>
        pool.transaction(async (query) => {
          await query('SELECT pg_advisory_xact_lock($1)', [KEYS_LOCK]);
          const key = decide(await activeKeys(query));
          if (!key) return false;
          await query(
            'INSERT INTO signing_keys (kid, alg, public_jwk, created_at, activates_at, retired_at) VALUES ($1, $2, $3, $4, $5, $6)',
            [key.kid, key.alg, JSON.stringify(key.publicJwk), key.createdAt, key.activatesAt, key.retiredAt],
          );
          await appendEvents(query, [event(key)]);
          return true;
        }),
      retire: (kid, now, event) =>
        pool.transaction(async (query) => {
          await query('SELECT pg_advisory_xact_lock($1)', [KEYS_LOCK]);
          if ((await query('SELECT 1 FROM issuances WHERE kid = $1 AND expires_at > $2 LIMIT 1', [kid, now])).length > 0) return false;
          const retired = await query('UPDATE signing_keys SET retired_at = $1 WHERE kid = $2 AND retired_at IS NULL RETURNING kid', [now, kid]);
          if (retired.length !== 1) return false;
          await appendEvents(query, [event]);
          return true;
        }),
    },

    admit: async (probe, decide) =>
      (
        await batcher.run(async (query, emit) => {
          await lockHolders(query, holderKeys(probe.holders.identity, probe.holders.person));
          const admission = decide(await admissionFacts(query, probe));
          if ('refuse' in admission) {
            await countRequest(query, probe, admission.refuse.event ? 'recorded' : 'counted');
            if (admission.refuse.event) emit([admission.refuse.event]);
            return admission.result;
          }
          const { request, issuance, reviewDueAt, events } = admission.admit;
          await admitWrites(query, probe, request, issuance, reviewDueAt);
          emit(events);
          return admission.result;
        })
      ).result,

    change: async (id, decide) =>
      (
        await batcher.run(async (query, emit) => {
          const state = await lockedState(query, id);
          return applyChange(query, emit, state, decide(state));
        })
      ).result,

    append: async (entries) => (await batcher.run(async (_query, emit) => emit(entries))).events,

    appendIfLatest: (entry, latestSeq) =>
      pool.transaction(async (query) => {
        // Held to commit: a second process waits here, then sees the first one's event.
        await query('SELECT pg_advisory_xact_lock($1)', [APPEND_IF_LATEST_LOCK]);
        const [newest] = await query<{ seq: number }>('SELECT seq FROM audit_events WHERE type = $1 ORDER BY seq DESC LIMIT 1', [entry.type]);
        if (Number(newest?.seq ?? 0) !== latestSeq) return undefined;
        return (await appendEvents(query, [entry]))[0];
      }),

    sweep: {
      grants: (now, limit, event) =>
        pool.transaction(async (query) => {
          const due = (
            await query<RequestRow & { jti: string | null }>(
              `SELECT r.*, i.jti FROM requests r LEFT JOIN issuances i ON i.request_id = r.id
               WHERE r.status = 'issued' AND r.expires_at <= $1 ORDER BY r.expires_at LIMIT $2 FOR UPDATE OF r SKIP LOCKED`,
              [now, limit],
            )
          ).map((row) => ({ grant: toRequest(row), jti: row.jti }));
          await expire(query, due.map(({ grant }) => grant), now);
          await settle(query, due.map(({ grant }) => ({ request: grant, to: 'expired' as const })));
          await appendEvents(query, due.map(({ grant, jti }) => event(grant, jti)));
          return due.map(({ grant }) => ({ ...grant, status: 'expired' as const, endedAt: now }));
        }),
      requests: (now, limit, event) =>
        pool.transaction(async (query) => {
          const due = (
            await query<RequestRow>(
              `SELECT * FROM requests WHERE status IN ('pending_approval', 'approved') AND expires_at <= $1
               ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED`,
              [now, limit],
            )
          ).map(toRequest);
          await expire(query, due, now);
          await settle(query, due.map((request) => ({ request, to: 'expired' as const })));
          await appendEvents(query, due.map(event));
          return due;
        }),
      overdueReviews: (now, limit, event) =>
        pool.transaction(async (query) => {
          const due = (
            await query<ReviewRow>(
              `SELECT * FROM break_glass_reviews WHERE outcome IS NULL AND overdue_at IS NULL AND due_at <= $1
               ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED`,
              [now, limit],
            )
          ).map(toReview);
          if (due.length === 0) return [];
          const ids = due.map((review) => review.requestId);
          await query('UPDATE break_glass_reviews SET overdue_at = $1 WHERE request_id = ANY($2)', [now, ids]);
          await appendEvents(query, due.map((review) => event({ ...review, overdueAt: now })));
          const requests = (await query<RequestRow>('SELECT * FROM requests WHERE id = ANY($1)', [ids])).map(toRequest);
          return ids.map((id) => requests.find((r) => r.id === id) as RequestRecord);
        }),
      refusals: (now, limit, event) =>
        pool.transaction(async (query) => {
          const current = minuteStart(now);
          const tallies = await query<{ holder: string; minute: number; refusals_counted: number; actor_iss: string; actor_sub: string }>(
            `SELECT holder, minute, refusals_counted, actor_iss, actor_sub FROM caller_minutes
             WHERE minute < $1 AND refusals_counted > 0 AND actor_iss IS NOT NULL ORDER BY minute LIMIT $2 FOR UPDATE SKIP LOCKED`,
            [current, limit],
          );
          for (const tally of tallies) {
            await query('UPDATE caller_minutes SET refusals_counted = 0 WHERE holder = $1 AND minute = $2', [tally.holder, tally.minute]);
          }
          await appendEvents(
            query,
            tallies.map((tally) => event({ actor: { iss: tally.actor_iss, sub: tally.actor_sub }, minuteStart: tally.minute, count: tally.refusals_counted })),
          );
          await query(
            `DELETE FROM caller_minutes WHERE ctid IN
               (SELECT ctid FROM caller_minutes WHERE minute < $1 AND refusals_counted = 0 LIMIT $2 FOR UPDATE SKIP LOCKED)`,
            [current, limit],
          );
          return tallies.length;
        }),
    },

    // A write rolled back: proves a primary that takes writes (not a read-only standby after a
    // failover) without a durable write per probe.
    probe: () => pool.transaction((query) => query('UPDATE readiness_probe SET at = at + 1 WHERE id = 1'), { rollback: true }).then(() => {}),

    async close() {
      await batcher.idle();
      await pool.end();
    },
  };
}

