import { statfsSync } from 'node:fs';
import { dirname } from 'node:path';
import type Database from 'better-sqlite3';
import { canonicalEvent, chainHash, GENESIS_HASH } from '../../audit/chain.js';
import { canonicalJson } from '../../shared/canonical-json.js';
import { toIso, type Clock } from '../../shared/clock.js';
import { Unavailable } from '../../shared/errors.js';
import type {
  Admission,
  AdmissionFacts,
  AdmissionProbe,
  HolderCounts,
  RequestChange,
  RequestState,
  Store,
  TransitionFields,
} from '../contract.js';
import type { AuditEntry, AuditEventRecord, IssuanceRecord, RequestRecord, RequestStatus } from '../records.js';
import { atLimit, holderKeys, identityHolder, isLive, jobKey, LIVE_SQL, loadDelta, MINUTE_MS, minuteStart, transitionColumns } from '../shared.js';
import { migrate, openDatabase, type Db } from './database.js';
import {
  mapOptional,
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
import { createWriter } from './writer.js';

const EVENTS_PER_STATEMENT = 500;
/** Below this much free space a commit may fail half-way through a batch: not ready. */
const MIN_FREE_BYTES = 16 * 1024 * 1024;

export interface SqliteStore extends Store {
  readonly db: Db;
}

/**
 * Opens (creating if need be) and migrates the database file, then returns the store over it:
 * one connection for the writer, one for reads, so that reads never wait on the write lock.
 */
export function openSqliteStore(path: string, clock: Clock): SqliteStore {
  const db = openDatabase(path);
  let reader: Db | undefined;
  try {
    migrate(db);
    reader = openDatabase(path);
    reader.pragma('query_only = ON');
  } catch (error) {
    db.close();
    reader?.close();
    throw error;
  }
  // The writer takes the write lock without waiting: when another process holds it, the writer
  // retries on a timer instead of blocking this process's event loop (see writer.ts).
  db.pragma('busy_timeout = 0');
  return createSqliteStore(db, clock, reader);
}

/**
 * The SQLite engine. Reads run on the read connection; every change runs through the
 * group-commit writer, inside its write transaction on the write connection: what a change
 * checks, it checks under the write lock, which also serialises other broker processes on the
 * same file.
 */
export function createSqliteStore(db: Db, clock: Clock, reader: Db = db): SqliteStore {
  const caches = new Map<Db, Map<string, Database.Statement>>([
    [db, new Map()],
    [reader, new Map()],
  ]);
  // better-sqlite3 is synchronous: while an operation runs inside the writer nothing else runs,
  // so switching the connection for its duration is safe.
  let active = reader;
  const sql = (text: string): Database.Statement => {
    const cache = caches.get(active) as Map<string, Database.Statement>;
    let statement = cache.get(text);
    if (!statement) {
      statement = active.prepare(text);
      cache.set(text, statement);
    }
    return statement;
  };
  const rows = <T>(text: string, ...params: unknown[]) => sql(text).all(...params) as T[];
  const row = <T>(text: string, ...params: unknown[]) => sql(text).get(...params) as T | undefined;
  const run = (text: string, ...params: unknown[]) => sql(text).run(...params);
  const marks = (n: number) => Array.from({ length: n }, () => '?').join(', ');
  const writer = createWriter(db, clock);
  /** Runs `work` as one operation of the writer's next group commit, on the write connection. */
  const write = <T>(work: () => T, options?: { rollback?: boolean }): Promise<T> =>
    writer.run(() => {
      active = db;
      try {
        return work();
      } finally {
        active = reader;
      }
    }, options);

  // ---- reads, usable inside and outside the writer ----

  const getRequest = (id: string) => mapOptional(row<RequestRow>('SELECT * FROM requests WHERE id = ?', id), toRequest);

  function states(requests: readonly RequestRecord[]): RequestState[] {
    if (requests.length === 0) return [];
    const ids = requests.map((r) => r.id);
    const approvals = rows<ApprovalRow>(
      `SELECT * FROM approvals WHERE request_id IN (${marks(ids.length)}) ORDER BY at, approver_iss, approver_sub`,
      ...ids,
    ).map(toApproval);
    const reviews = rows<ReviewRow>(`SELECT * FROM break_glass_reviews WHERE request_id IN (${marks(ids.length)})`, ...ids).map(toReview);
    const issuances = rows<IssuanceRow>(`SELECT * FROM issuances WHERE request_id IN (${marks(ids.length)})`, ...ids).map(toIssuance);
    return requests.map((request) => ({
      request,
      approvals: approvals.filter((a) => a.requestId === request.id),
      review: reviews.find((r) => r.requestId === request.id),
      issuance: issuances.find((i) => i.requestId === request.id),
    }));
  }

  const activeKeys = () =>
    rows<KeyRow>('SELECT * FROM signing_keys WHERE retired_at IS NULL ORDER BY activates_at DESC, created_at DESC, kid DESC').map(toKey);

  const stateOf = (id: string): RequestState | undefined => {
    const request = getRequest(id);
    return request ? states([request])[0] : undefined;
  };

  // ---- writes, only inside the writer ----

  function appendEvents(entries: readonly AuditEntry[]): AuditEventRecord[] {
    if (entries.length === 0) return [];
    let head = row<{ seq: number; hash: string }>('SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1');
    const at = toIso(clock());
    const records = entries.map((entry) => {
      const event = {
        seq: (head?.seq ?? 0) + 1,
        at,
        type: entry.type,
        actor: entry.actor ? { iss: entry.actor.iss, sub: entry.actor.sub } : null,
        requestId: entry.requestId ?? null,
        data: entry.data ?? {},
      };
      const prevHash = head?.hash ?? GENESIS_HASH;
      const record = { ...event, prevHash, hash: chainHash(prevHash, canonicalEvent(event)) };
      head = record;
      return record;
    });
    // A statement per event costs more than its row; SQLite takes at most 32,766 parameters.
    for (let i = 0; i < records.length; i += EVENTS_PER_STATEMENT) {
      const chunk = records.slice(i, i + EVENTS_PER_STATEMENT);
      run(
        `INSERT INTO audit_events (seq, at, type, actor_iss, actor_sub, request_id, data, prev_hash, hash)
         VALUES ${chunk.map(() => '(?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`,
        ...chunk.flatMap((r) => [
          r.seq, r.at, r.type, r.actor?.iss ?? null, r.actor?.sub ?? null, r.requestId, canonicalJson(r.data), r.prevHash, r.hash,
        ]),
      );
    }
    return records;
  }

  function insertRequest(r: RequestRecord): void {
    run(
      `INSERT INTO requests (id, requester_iss, requester_sub, requester_idp, initiator, person, job, task_id, scopes,
         audience, ttl_seconds, justification, break_glass, policy_ids, digest, approvals_required, status, created_at,
         expires_at, decided_at, issued_at, ended_at, revoke_reason, revoked_by_iss, revoked_by_sub)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      r.id, r.requester.iss, r.requester.sub, r.requesterIdp, r.initiator, r.person, jobKey(r.boundClaims), r.taskId,
      JSON.stringify(r.scopes), r.audience, r.ttlSeconds, r.justification, r.breakGlass ? 1 : 0, JSON.stringify(r.policyIds),
      r.digest, r.approvalsRequired, r.status, r.createdAt, r.expiresAt, r.decidedAt, r.issuedAt, r.endedAt,
      r.revokeReason, r.revokedBy?.iss ?? null, r.revokedBy?.sub ?? null,
    );
    if (!isLive(r.status)) return;
    const holders = holderKeys(r.requester, r.person);
    const rows = holders.flatMap((holder) => r.scopes.map((scope) => [holder, scope, r.id]));
    run(`INSERT INTO live_scopes (holder, scope, request_id) VALUES ${rows.map(() => '(?, ?, ?)').join(', ')}`, ...rows.flat());
    adjustLoad(holders, 1, r.status === 'pending_approval' ? 1 : 0);
  }

  /** One statement per change, however many holders: each statement costs more than its rows. */
  function adjustLoad(holders: readonly string[], live: number, pending: number): void {
    run(
      `INSERT INTO holder_load (holder, live, pending) VALUES ${holders.map(() => '(?, ?, ?)').join(', ')}
       ON CONFLICT (holder) DO UPDATE SET live = live + excluded.live, pending = pending + excluded.pending`,
      ...holders.flatMap((holder) => [holder, live, pending]),
    );
  }

  function insertIssuance(i: IssuanceRecord): void {
    run(
      'INSERT INTO issuances (jti, request_id, token_sha256, kid, issued_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)',
      i.jti, i.requestId, i.tokenSha256, i.kid, i.issuedAt, i.expiresAt,
    );
    run(
      `INSERT INTO issued_scopes (scope, issued_at, request_id)
       SELECT s.value, ?, r.id FROM requests r, json_each(r.scopes) s WHERE r.id = ?`,
      i.issuedAt, i.requestId,
    );
  }

  /** Moves a request on; a request that stops being live leaves the separation index. */
  function transition(request: RequestRecord, from: readonly RequestStatus[], to: RequestStatus, fields: TransitionFields = {}): void {
    const columns = transitionColumns(fields);
    const changed = run(
      `UPDATE requests SET status = ?${columns.map(([column]) => `, ${column} = ?`).join('')} WHERE id = ? AND status IN (${marks(from.length)})`,
      to, ...columns.map(([, value]) => value), request.id, ...from,
    ).changes;
    // The state was read in this same transaction: a mismatch is a defect, never a race.
    if (changed !== 1) throw new Error(`request ${request.id} is ${request.status}, not ${from.join('|')}`);
    const { live, pending } = loadDelta(request.status, to);
    if (live !== 0 || pending !== 0) adjustLoad(holderKeys(request.requester, request.person), live, pending);
    if (live < 0) run('DELETE FROM live_scopes WHERE request_id = ?', request.id);
  }

  // ---- admission facts ----

  function breakGlassSince(column: 'identity' | 'person', probe: AdmissionProbe, since: number, cap: number) {
    const { identity, person } = probe.holders;
    if (column === 'person' && person === null) return { count: 0, oldest: null };
    const [where, params] =
      column === 'identity' ? ['requester_iss = ? AND requester_sub = ?', [identity.iss, identity.sub]] : ['person = ?', [person]];
    const found = row<{ n: number; oldest: number | null }>(
      `SELECT count(*) AS n, min(issued_at) AS oldest FROM
         (SELECT issued_at FROM requests WHERE ${where} AND break_glass = 1 AND issued_at > ? LIMIT ?)`,
      ...params, since, cap,
    );
    return { count: found?.n ?? 0, oldest: found?.oldest ?? null };
  }

  function admissionFacts(probe: AdmissionProbe): AdmissionFacts {
    const minute = minuteStart(probe.now);
    const [identityKey, personKey] = holderKeys(probe.holders.identity, probe.holders.person);
    const holders = holderKeys(probe.holders.identity, probe.holders.person);
    const minutes = rows<{ holder: string; requests: number; refusals_recorded: number }>(
      `SELECT holder, requests, refusals_recorded FROM caller_minutes WHERE minute = ? AND holder IN (${marks(holders.length)})`,
      minute, ...holders,
    );
    const loads = rows<{ holder: string; live: number; pending: number }>(
      `SELECT holder, live, pending FROM holder_load WHERE holder IN (${marks(holders.length)})`,
      ...holders,
    );
    const mine = minutes.find((m) => m.holder === identityKey);
    const identityLoad = loads.find((l) => l.holder === identityKey);
    const personLoad = loads.find((l) => l.holder === personKey);
    const facts: AdmissionFacts = {
      requestsThisMinute: { identity: mine?.requests ?? 0, person: minutes.find((m) => m.holder === personKey)?.requests ?? 0 },
      minuteEndsAt: minute + MINUTE_MS,
      refusalsRecorded: mine?.refusals_recorded ?? 0,
      live: { identity: identityLoad?.live ?? 0, person: personLoad?.live ?? 0 },
      pending: { identity: identityLoad?.pending ?? 0, person: personLoad?.pending ?? 0 },
    };
    if (atLimit(facts, probe)) {
      const { identity, person } = probe.holders;
      const soonest = row<{ at: number | null }>(
        `SELECT min(at) AS at FROM (
           SELECT min(expires_at) AS at FROM requests WHERE requester_iss = ? AND requester_sub = ? AND status IN ${LIVE_SQL}
           UNION ALL SELECT min(expires_at) FROM requests WHERE person = ? AND status IN ${LIVE_SQL})`,
        identity.iss, identity.sub, person,
      );
      facts.soonestEnd = soonest?.at ?? null;
    }
    if (probe.conflicting.length > 0) {
      const conflict = row<{ id: string; scopes: string; holder: string }>(
        // CROSS JOIN keeps live_scopes first: the few rows of the conflicting scopes, never the
        // requests table's live rows, which grow with every caller's grants.
        `SELECT r.id, r.scopes, l.holder FROM live_scopes l CROSS JOIN requests r ON r.id = l.request_id
         WHERE l.holder IN (${marks(holders.length)}) AND l.scope IN (${marks(probe.conflicting.length)})
           AND r.status IN ${LIVE_SQL} AND r.expires_at > ?
         LIMIT 1`,
        ...holders, ...probe.conflicting, probe.now,
      );
      if (conflict) {
        facts.conflict = { requestId: conflict.id, scopes: JSON.parse(conflict.scopes) as string[], byPerson: conflict.holder !== holders[0] };
      }
    }
    if (probe.breakGlass) {
      const { since, cap } = probe.breakGlass;
      facts.breakGlass = { identity: breakGlassSince('identity', probe, since, cap), person: breakGlassSince('person', probe, since, cap) };
    }
    return facts;
  }

  function countRequest(probe: AdmissionProbe, refusal: 'recorded' | 'counted' | undefined): void {
    const minute = minuteStart(probe.now);
    const { identity, person } = probe.holders;
    // The identity's row also counts its refusals and names it (for the aggregated event); the
    // person's counts requests only.
    const people = person === null ? [] : [person, minute, 0, 0, null, null];
    run(
      `INSERT INTO caller_minutes (holder, minute, requests, refusals_recorded, refusals_counted, actor_iss, actor_sub)
       VALUES (?, ?, 1, ?, ?, ?, ?)${person === null ? '' : ', (?, ?, 1, ?, ?, ?, ?)'}
       ON CONFLICT (holder, minute) DO UPDATE SET requests = requests + 1,
         refusals_recorded = refusals_recorded + excluded.refusals_recorded,
         refusals_counted = refusals_counted + excluded.refusals_counted`,
      identityHolder(identity), minute, refusal === 'recorded' ? 1 : 0, refusal === 'counted' ? 1 : 0, identity.iss, identity.sub, ...people,
    );
  }

  function applyChange<R>(state: RequestState | undefined, change: RequestChange<R>): R {
    if (change.transition) {
      if (!state) throw new Error('a transition needs a request');
      transition(state.request, change.transition.from, change.transition.to, change.transition.fields);
    }
    if (change.approval) {
      const a = change.approval;
      run(
        `INSERT INTO approvals (request_id, approver_iss, approver_sub, person, decision, reason, digest, at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
        a.requestId, a.approver.iss, a.approver.sub, a.person, a.decision, a.reason, a.digest, a.at,
      );
    }
    if (change.issuance) insertIssuance(change.issuance);
    if (change.review) {
      const { outcome, notes, reviewer, at } = change.review;
      const changed = run(
        `UPDATE break_glass_reviews SET outcome = ?, notes = ?, reviewer_iss = ?, reviewer_sub = ?, reviewed_at = ?
         WHERE request_id = ? AND outcome IS NULL`,
        outcome, notes, reviewer.iss, reviewer.sub, at, state?.request.id,
      ).changes;
      if (changed !== 1) throw new Error(`review of ${state?.request.id} is not pending`);
    }
    appendEvents(change.events);
    return change.result;
  }

  const store: SqliteStore = {
    engine: 'sqlite',
    db,

    requests: {
      get: async (id) => getRequest(id),
      state: async (id) => stateOf(id),
      states: async (requests) => states(requests),
      async owned(owner, filter, after, limit) {
        const where = ['requester_iss = ?', 'requester_sub = ?', 'job = ?', '(created_at, id) < (?, ?)'];
        const params: unknown[] = [owner.iss, owner.sub, jobKey(owner.boundClaims), after?.createdAt ?? Number.MAX_SAFE_INTEGER, after?.id ?? ''];
        // Statuses as callers see them: a live request past its deadline is expired.
        if (filter.status === 'expired') {
          where.push(`(status = 'expired' OR (status IN ${LIVE_SQL} AND expires_at <= ?))`);
          params.push(filter.now);
        } else if (filter.status !== undefined && isLive(filter.status)) {
          where.push('status = ? AND expires_at > ?');
          params.push(filter.status, filter.now);
        } else if (filter.status !== undefined) {
          where.push('status = ?');
          params.push(filter.status);
        }
        return rows<RequestRow>(
          `SELECT * FROM requests WHERE ${where.join(' AND ')} ORDER BY created_at DESC, id DESC LIMIT ?`,
          ...params, limit,
        ).map(toRequest);
      },
      pending: async (now, after, limit) =>
        rows<RequestRow>(
          `SELECT * FROM requests WHERE status = 'pending_approval' AND expires_at > ?
             AND (created_at, id) > (?, ?) ORDER BY created_at, id LIMIT ?`,
          now, after?.createdAt ?? -1, after?.id ?? '', limit,
        ).map(toRequest),
    },

    issuances: {
      get: async (jti) => mapOptional(row<IssuanceRow>('SELECT * FROM issuances WHERE jti = ?', jti), toIssuance),
      revokedUnexpired: async (now, afterJti, limit) =>
        rows<IssuanceRow>(
          `SELECT i.* FROM issuances i JOIN requests r ON r.id = i.request_id
           WHERE r.status = 'revoked' AND i.expires_at > ? AND i.jti > ? ORDER BY i.jti LIMIT ?`,
          now, afterJti ?? '', limit,
        ).map(toIssuance),
    },

    reviews: {
      list: async (state, after, limit) =>
        rows<RequestRow & { due_at: number }>(
          `SELECT r.*, b.due_at FROM break_glass_reviews b JOIN requests r ON r.id = b.request_id
           WHERE (b.outcome IS NULL) = ? AND (b.due_at, b.request_id) > (?, ?)
           ORDER BY b.due_at, b.request_id LIMIT ?`,
          state === 'pending' ? 1 : 0, after?.dueAt ?? -1, after?.requestId ?? '', limit,
        ).map((r) => ({ request: toRequest(r), dueAt: r.due_at })),
      async pendingCounts() {
        const counts = row<{ pending: number; overdue: number }>(
          `SELECT count(*) AS pending, count(overdue_at) AS overdue FROM break_glass_reviews WHERE outcome IS NULL`,
        );
        return { pending: counts?.pending ?? 0, overdue: counts?.overdue ?? 0 };
      },
    },

    events: {
      head: async () => row<{ seq: number; hash: string }>('SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1'),
      after: async (afterSeq, limit) =>
        rows<EventRow>('SELECT * FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?', afterSeq, limit).map(toEvent),
      at: async (seq) => mapOptional(row<EventRow>('SELECT * FROM audit_events WHERE seq = ?', seq), toEvent),
      latest: async (type) => mapOptional(row<EventRow>('SELECT * FROM audit_events WHERE type = ? ORDER BY seq DESC LIMIT 1', type), toEvent),
    },

    audit: {
      async issuances(filter, after, limit, now) {
        // A request yields at most one token, so (issued_at, request id) orders issuances uniquely.
        // Every filter has an index in that order (migration 007). By scope alone, the listing walks
        // issued_scopes, whose key carries the same two values; with a subject, the subject's few
        // grants are walked and each is probed for the scope.
        const byScope = filter.scope !== undefined && filter.subject === undefined;
        const [source, issuedAt, id] = byScope
          ? ['issued_scopes s JOIN requests r ON r.id = s.request_id', 's.issued_at', 's.request_id']
          : ['requests r', 'r.issued_at', 'r.id'];
        const { where, params, add } = conditions(`${issuedAt} IS NOT NULL AND (${issuedAt}, ${id}) > (?, ?)`, after?.issuedAt ?? -1, after?.requestId ?? '');
        if (byScope) add('s.scope = ?', filter.scope);
        else if (filter.scope !== undefined) {
          add('EXISTS (SELECT 1 FROM issued_scopes s WHERE s.scope = ? AND s.issued_at = r.issued_at AND s.request_id = r.id)', filter.scope);
        }
        if (filter.since !== undefined) add(`${issuedAt} >= ?`, filter.since);
        if (filter.until !== undefined) add(`${issuedAt} < ?`, filter.until);
        if (filter.subject !== undefined) add('r.requester_sub = ?', filter.subject);
        // Literals, not parameters, so the partial index on break-glass grants applies.
        if (filter.breakGlass !== undefined) add(filter.breakGlass ? 'r.break_glass = 1' : 'r.break_glass = 0');
        // Statuses as they are now: an issued token past its expiry counts as expired before the
        // scheduler says so. Expired is most grants: walked in time order (`+` keeps the status index out).
        if (filter.status === 'issued') add(`r.status = 'issued' AND r.expires_at > ?`, now);
        if (filter.status === 'expired') add(`(+r.status = 'expired' OR (+r.status = 'issued' AND r.expires_at <= ?))`, now);
        if (filter.status === 'revoked') add(`r.status = 'revoked'`);
        return rows<IssuanceAuditRow>(
          `SELECT i.jti, r.id AS request_id, r.issued_at, i.expires_at, r.requester_iss, r.requester_sub, r.task_id, r.scopes,
                  r.audience, r.justification, r.break_glass, r.ended_at, r.revoke_reason,
                  CASE WHEN r.status = 'issued' AND i.expires_at <= ? THEN 'expired' ELSE r.status END AS status,
                  (SELECT json_group_array(json_object('iss', a.approver_iss, 'sub', a.approver_sub, 'at', a.at))
                     FROM approvals a WHERE a.request_id = r.id AND a.decision = 'approve') AS approvers
           FROM ${source} JOIN issuances i ON i.request_id = r.id
           WHERE ${where.join(' AND ')}
           ORDER BY ${issuedAt}, ${id} LIMIT ?`,
          now, ...params, limit,
        ).map(toIssuanceAudit);
      },
      async events(filter, afterSeq, limit) {
        const { where, params, add } = conditions('seq > ?', afterSeq);
        if (filter.since !== undefined) add('at >= ?', filter.since);
        if (filter.until !== undefined) add('at < ?', filter.until);
        if (filter.type !== undefined) add('type = ?', filter.type);
        if (filter.requestId !== undefined) add('request_id = ?', filter.requestId);
        return rows<EventRow>(`SELECT * FROM audit_events WHERE ${where.join(' AND ')} ORDER BY seq LIMIT ?`, ...params, limit).map(toEvent);
      },
    },

    keys: {
      active: async () => activeKeys(),
      get: async (kid) => mapOptional(row<KeyRow>('SELECT * FROM signing_keys WHERE kid = ?', kid), toKey),
      add: (decide, event) =>
        write(() => {
          const key = decide(activeKeys());
          if (!key) return false;
          run(
            'INSERT INTO signing_keys (kid, alg, public_jwk, created_at, activates_at, retired_at) VALUES (?, ?, ?, ?, ?, ?)',
            key.kid, key.alg, JSON.stringify(key.publicJwk), key.createdAt, key.activatesAt, key.retiredAt,
          );
          appendEvents([event(key)]);
          return true;
        }),
      retire: (kid, now, event) =>
        write(() => {
          if (row('SELECT 1 FROM issuances WHERE kid = ? AND expires_at > ? LIMIT 1', kid, now)) return false;
          if (run('UPDATE signing_keys SET retired_at = ? WHERE kid = ? AND retired_at IS NULL', now, kid).changes !== 1) return false;
          appendEvents([event]);
          return true;
        }),
    },

    admit<R>(probe: AdmissionProbe, decide: (facts: AdmissionFacts) => Admission<R>) {
      return write(() => {
        const facts = admissionFacts(probe);
        const admission = decide(facts);
        if ('refuse' in admission) {
          countRequest(probe, admission.refuse.event ? 'recorded' : 'counted');
          if (admission.refuse.event) appendEvents([admission.refuse.event]);
          return admission.result;
        }
        const { request, issuance, reviewDueAt, events } = admission.admit;
        countRequest(probe, undefined);
        insertRequest(request);
        if (reviewDueAt !== undefined) run('INSERT INTO break_glass_reviews (request_id, due_at) VALUES (?, ?)', request.id, reviewDueAt);
        if (issuance) insertIssuance(issuance);
        appendEvents(events);
        return admission.result;
      });
    },

    change: (id, decide) =>
      write(() => {
        const state = stateOf(id);
        return applyChange(state, decide(state));
      }),

    append: (entries) => write(() => appendEvents(entries)),

    appendIfLatest: (entry, latestSeq) =>
      write(() => {
        const newest = row<{ seq: number }>('SELECT seq FROM audit_events WHERE type = ? ORDER BY seq DESC LIMIT 1', entry.type);
        return (newest?.seq ?? 0) === latestSeq ? appendEvents([entry])[0] : undefined;
      }),

    sweep: {
      grants: (now, limit, event) =>
        write(() => {
          const due = rows<RequestRow & { jti: string | null }>(
            `SELECT r.*, i.jti FROM requests r LEFT JOIN issuances i ON i.request_id = r.id
             WHERE r.status = 'issued' AND r.expires_at <= ? ORDER BY r.expires_at LIMIT ?`,
            now, limit,
          );
          return due.map((found) => {
            const grant = toRequest(found);
            transition(grant, ['issued'], 'expired', { endedAt: now });
            appendEvents([event(grant, found.jti)]);
            return { ...grant, status: 'expired' as const, endedAt: now };
          });
        }),
      requests: (now, limit, event) =>
        write(() => {
          const expired: RequestRecord[] = [];
          for (const status of ['pending_approval', 'approved'] as const) {
            const due = rows<RequestRow>(
              'SELECT * FROM requests WHERE status = ? AND expires_at <= ? ORDER BY expires_at LIMIT ?',
              status, now, limit - expired.length,
            ).map(toRequest);
            for (const request of due) {
              transition(request, [status], 'expired', { endedAt: now });
              appendEvents([event(request)]);
              expired.push(request);
            }
          }
          return expired;
        }),
      overdueReviews: (now, limit, event) =>
        write(() => {
          const due = rows<ReviewRow>(
            `SELECT * FROM break_glass_reviews WHERE outcome IS NULL AND overdue_at IS NULL AND due_at <= ? ORDER BY due_at LIMIT ?`,
            now, limit,
          ).map(toReview);
          return due.map((review) => {
            run('UPDATE break_glass_reviews SET overdue_at = ? WHERE request_id = ?', now, review.requestId);
            appendEvents([event({ ...review, overdueAt: now })]);
            return getRequest(review.requestId) as RequestRecord;
          });
        }),
      refusals: (now, limit, event) =>
        write(() => {
          const current = minuteStart(now);
          const tallies = rows<{ holder: string; minute: number; refusals_counted: number; actor_iss: string; actor_sub: string }>(
            `SELECT holder, minute, refusals_counted, actor_iss, actor_sub FROM caller_minutes
             WHERE minute < ? AND refusals_counted > 0 AND actor_iss IS NOT NULL ORDER BY minute LIMIT ?`,
            current, limit,
          );
          for (const tally of tallies) {
            appendEvents([event({ actor: { iss: tally.actor_iss, sub: tally.actor_sub }, minuteStart: tally.minute, count: tally.refusals_counted })]);
            run('UPDATE caller_minutes SET refusals_counted = 0 WHERE holder = ? AND minute = ?', tally.holder, tally.minute);
          }
          // Minutes with nothing left to report are no longer needed: the rate looks at the current one.
          run(
            `DELETE FROM caller_minutes WHERE rowid IN
               (SELECT rowid FROM caller_minutes WHERE minute < ? AND refusals_counted = 0 LIMIT ?)`,
            current, limit,
          );
          return tallies.length;
        }),
    },

    async probe() {
      const failed = writer.lastFailure();
      if (failed !== undefined) throw new Unavailable('The last commit failed.', { internal: { failed_at: toIso(failed) } });
      // A write through the writer, rolled back: proves the file takes the write lock and is not
      // read-only, without a durable write per probe; free space stands for the rest.
      await write(() => run('UPDATE readiness_probe SET at = at + 1 WHERE id = 1'), { rollback: true });
      if (db.name !== ':memory:') {
        const fs = statfsSync(dirname(db.name));
        if (fs.bavail * fs.bsize < MIN_FREE_BYTES) throw new Unavailable('The database disk is full.');
      }
    },

    async close() {
      if (!db.open) return;
      writer.close();
      if (reader !== db) reader.close();
      if (!db.readonly) db.pragma('optimize');
      db.close();
    },
  };
  return store;
}

/** A WHERE clause built from optional filters, with its parameters in order. */
function conditions(first: string, ...values: unknown[]) {
  const where = [first];
  const params: unknown[] = [...values];
  return {
    where,
    params,
    add(clause: string, ...clauseValues: unknown[]) {
      where.push(clause);
      params.push(...clauseValues);
    },
  };
}
