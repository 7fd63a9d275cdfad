import { toIso, type Clock } from '../shared/clock.js';
import { decodeWindow, emptyWindow, encodeWindow, merge, record, WINDOW_SECONDS, type RateWindow } from '../shared/rate-window.js';
import { objectKey } from '../shared/authorization-details.js';
import type {
  Admission,
  AdmissionFacts,
  AdmissionProbe,
  ChangeFacts,
  DutyFinding,
  DutyProbe,
  Holder,
  HolderFacts,
  ProofUse,
  RequestChange,
  RequestState,
  Store,
  TransitionFields,
} from './contract.js';
import type { Emit, Engine, Maintenance, Sql } from './engine.js';
import type { AuditEntry, EntitlementUse, NewIssuance, Principal, RequestRecord, RequestStatus } from './records.js';
import {
  mapOptional,
  toApproval,
  toEvent,
  toLink,
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
} from './rows.js';
import {
  actingKeys,
  countedKeys,
  identityHolder,
  isLive,
  jobKey,
  LIVE_SQL,
  loadDelta,
  marks,
  MINUTE_MS,
  minuteStart,
  principalKeys,
  recordedKeys,
  requestKeys,
  transitionColumns,
} from './shared.js';

/** Signing keys change under this lock, so processes sharing a store (or a key directory) rotate once. */
const KEYS_LOCK = 'keys';
/** The chain's newest event. */
const HEAD_SQL = 'SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1';
/** Conditional appends (`appendIfLatest`) judge and write under this lock. */
const APPEND_IF_LATEST_LOCK = 'append-if-latest';
/** Grants counted per statement by the entitlements report: two parameters each, well under either engine's limit. */
const ENTITLEMENTS_CHUNK = 500;
/** How many times a sweep's batch passes over rows held elsewhere for later ones before it settles for fewer. */
const MAX_CLAIM_ROUNDS = 8;

/**
 * The broker's records, written once for every engine: the SQL here runs unchanged on SQLite and
 * PostgreSQL, and the engine makes each operation atomic its own way (see engine.ts). An
 * operation names what it locks before it starts (its caller, its request), which on PostgreSQL
 * serialises the judgements about one caller or one request across replicas, and reads every
 * fact its decision depends on inside the same transaction.
 *
 * Statements that do not depend on each other are issued together (`Promise.all`, never an
 * `await` between them): an operation reads all its facts at once, decides, then issues all its
 * writes at once, in the order they must run. SQLite runs them one after another as they come;
 * PostgreSQL's engine sends each such group in one round trip, with those of the other
 * operations of its batch (postgres/batch.ts). A helper that writes issues every statement of
 * its own before its first `await`.
 */
export function createStore(engine: Engine, clock: Clock): Store {
  const { dialect, read } = engine;

  const json = (value: unknown) => (value === null ? null : JSON.stringify(value));

  const getRequest = async (sql: Sql, id: string) => mapOptional(await sql.get<RequestRow>('SELECT * FROM requests WHERE id = ?', [id]), toRequest);

  /** What the views of these requests show besides them: one statement per table, never one per request. */
  async function viewParts(sql: Sql, ids: readonly string[]) {
    const list = marks(ids.length);
    const [approvals, reviews, issuances] = await Promise.all([
      sql.all<ApprovalRow>(`SELECT * FROM approvals WHERE request_id IN (${list}) ORDER BY at, approver_iss, approver_sub`, ids),
      sql.all<ReviewRow>(`SELECT * FROM break_glass_reviews WHERE request_id IN (${list})`, ids),
      sql.all<IssuanceRow>(`SELECT * FROM issuances WHERE request_id IN (${list})`, ids),
    ]);
    return { approvals: approvals.map(toApproval), reviews: reviews.map(toReview), issuances: issuances.map(toIssuance) };
  }

  const assemble = (requests: readonly RequestRecord[], parts: Awaited<ReturnType<typeof viewParts>>): RequestState[] =>
    requests.map((request) => ({
      request,
      approvals: parts.approvals.filter((a) => a.requestId === request.id),
      review: parts.reviews.find((r) => r.requestId === request.id),
      issuance: parts.issuances.find((i) => i.requestId === request.id),
    }));

  /** Requests with what their views show. */
  const states = async (sql: Sql, requests: readonly RequestRecord[]): Promise<RequestState[]> =>
    requests.length === 0 ? [] : assemble(requests, await viewParts(sql, requests.map((r) => r.id)));

  /** One request with what its view shows, read at once. */
  const stateOf = async (sql: Sql, id: string): Promise<RequestState | undefined> => {
    const [request, parts] = await Promise.all([getRequest(sql, id), viewParts(sql, [id])]);
    return request ? assemble([request], parts)[0] : undefined;
  };

  const activeKeys = async (sql: Sql) =>
    (await sql.all<KeyRow>('SELECT * FROM signing_keys WHERE retired_at IS NULL ORDER BY activates_at DESC, created_at DESC, kid DESC')).map(toKey);

  // ---- writes ----

  /** The request's row, then the rows that refer to it. */
  function insertRequest(sql: Sql, r: RequestRecord): Promise<unknown> {
    const writes: Promise<unknown>[] = [
      sql.run(
        `INSERT INTO requests (id, requester_iss, requester_sub, requester_idp, initiator, person, job, task_id, scopes,
           audience, ttl_seconds, justification, break_glass, authorization_details, act, delegation_rule, parent_id, root_id,
           subject_claims, dpop_jkt, policy_ids, digest, approvals_required, status, created_at, expires_at, decided_at, issued_at,
           ended_at, revoke_reason, revoked_by_iss, revoked_by_sub)
         VALUES (${marks(32)})`,
        [
          r.id, r.requester.iss, r.requester.sub, r.requesterIdp, r.initiator, r.person, jobKey(r.boundClaims), r.taskId,
          JSON.stringify(r.scopes), r.audience, r.ttlSeconds, r.justification, r.breakGlass,
          json(r.authorizationDetails), json(r.act), r.delegationRule, r.parentId, r.rootId, json(r.subjectClaims), r.dpopJkt,
          JSON.stringify(r.policyIds), r.digest, r.approvalsRequired, r.status, r.createdAt, r.expiresAt, r.decidedAt,
          r.issuedAt, r.endedAt, r.revokeReason, r.revokedBy?.iss ?? null, r.revokedBy?.sub ?? null,
        ],
      ),
    ];
    const actors = [...new Map((r.act ?? []).map((actor) => [`${actor.iss}\n${actor.sub}`, actor])).values()];
    if (actors.length > 0) {
      writes.push(sql.run(`INSERT INTO request_actors (sub, iss, request_id, created_at) VALUES ${actors.map(() => '(?, ?, ?, ?)').join(', ')}`, actors.flatMap((a) => [a.sub, a.iss, r.id, r.createdAt])));
    }
    // An entry that names no object is kept under '' so that the `type` filter finds it too.
    const objects = [
      ...new Map((r.authorizationDetails ?? []).map((d) => {
        const object = d.identifier === undefined ? '' : objectKey(d.identifier);
        return [`${d.type}\n${object}`, [d.type, object]] as const;
      })).values(),
    ];
    if (objects.length > 0) {
      writes.push(sql.run(`INSERT INTO request_objects (type, object, request_id) VALUES ${objects.map(() => '(?, ?, ?)').join(', ')}`, objects.flatMap((o) => [...o, r.id])));
    }
    if (isLive(r.status)) {
      // Toxic combinations count for the principal; limits for the principal and each actor.
      const rows = principalKeys(r).flatMap((key) => r.scopes.map((scope) => [key, scope, r.id]));
      writes.push(sql.run(`INSERT INTO live_scopes (holder, scope, request_id) VALUES ${rows.map(() => '(?, ?, ?)').join(', ')}`, rows.flat()));
      writes.push(adjustLoad(sql, new Map(requestKeys(r).map((key) => [key, { live: 1, pending: r.status === 'pending_approval' ? 1 : 0 }]))));
      // Each key it counts under as an actor, with its end: at a limit, one past its end is taken
      // off that count (as the principal's are, read from the request's own row).
      const held = actingKeys(r).map((key) => [key, r.expiresAt, r.id, r.status === 'pending_approval' ? 1 : 0]);
      if (held.length > 0) {
        writes.push(sql.run(`INSERT INTO live_holders (holder, expires_at, request_id, pending) VALUES ${held.map(() => '(?, ?, ?, ?)').join(', ')}`, held.flat()));
      }
    }
    return Promise.all(writes);
  }

  /** Changes holders' counts in one statement, rows in a fixed order (no two transactions wait on each other in a cycle). */
  async function adjustLoad(sql: Sql, deltas: ReadonlyMap<string, { live: number; pending: number }>): Promise<void> {
    const keys = [...deltas.keys()].sort();
    if (keys.length === 0) return;
    await sql.run(
      `INSERT INTO holder_load (holder, live, pending) VALUES ${keys.map(() => '(?, ?, ?)').join(', ')}
       ON CONFLICT (holder) DO UPDATE SET live = holder_load.live + excluded.live, pending = holder_load.pending + excluded.pending`,
      keys.flatMap((key) => [key, deltas.get(key)?.live ?? 0, deltas.get(key)?.pending ?? 0]),
    );
  }

  function insertIssuance(sql: Sql, i: NewIssuance, scopes: readonly string[]): Promise<unknown> {
    return Promise.all([
      sql.run('INSERT INTO issuances (jti, request_id, token_sha256, kid, issued_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)', [
        i.jti, i.requestId, i.tokenSha256, i.kid, i.issuedAt, i.expiresAt,
      ]),
      // Each scope with the policy that granted it: what the entitlements report counts it under.
      sql.run(
        `INSERT INTO issued_scopes (scope, issued_at, request_id, policy) VALUES ${scopes.map(() => '(?, ?, ?, ?)').join(', ')}`,
        scopes.flatMap((scope) => [scope, i.issuedAt, i.requestId, i.grantedBy[scope] ?? null]),
      ),
    ]);
  }

  /** Moves requests on from the statuses they were read in (under this operation's locks). */
  async function transition(sql: Sql, request: RequestRecord, from: readonly RequestStatus[], to: RequestStatus, fields: TransitionFields = {}): Promise<void> {
    const columns = transitionColumns(fields);
    // Still live with another end (approved, collected) or no longer awaiting approval: its holders' rows follow.
    const held = actingKeys(request).length > 0 && isLive(to) && (fields.expiresAt !== undefined || (request.status === 'pending_approval') !== (to === 'pending_approval'));
    const [changed] = await Promise.all([
      sql.run(
        `UPDATE requests SET status = ?${columns.map(([column]) => `, ${column} = ?`).join('')} WHERE id = ? AND status IN (${marks(from.length)})`,
        [to, ...columns.map(([, value]) => value), request.id, ...from],
      ),
      settle(sql, [{ request, to }]),
      held
        ? sql.run('UPDATE live_holders SET expires_at = ?, pending = ? WHERE request_id = ?', [fields.expiresAt ?? request.expiresAt, to === 'pending_approval' ? 1 : 0, request.id])
        : undefined,
    ]);
    // The state was read under this operation's locks: a mismatch is a defect, never a race (and
    // the throw undoes the settling issued with it).
    if (changed !== 1) throw new Error(`request ${request.id} is ${request.status}, not ${from.join('|')}`);
  }

  /** After transitions: the holders' counts, and the separation index of requests no longer live. */
  function settle(sql: Sql, moves: readonly { request: RequestRecord; to: RequestStatus }[]): Promise<unknown> {
    const deltas = new Map<string, { live: number; pending: number }>();
    const ended: string[] = [];
    const acted: string[] = [];
    for (const { request, to } of moves) {
      const { live, pending } = loadDelta(request.status, to);
      if (live < 0) ended.push(request.id);
      if (live < 0 && actingKeys(request).length > 0) acted.push(request.id);
      if (live === 0 && pending === 0) continue;
      for (const key of requestKeys(request)) {
        const sum = deltas.get(key) ?? { live: 0, pending: 0 };
        deltas.set(key, { live: sum.live + live, pending: sum.pending + pending });
      }
    }
    return Promise.all([
      adjustLoad(sql, deltas),
      ended.length > 0 ? sql.run(`DELETE FROM live_scopes WHERE request_id IN (${marks(ended.length)})`, ended) : undefined,
      acted.length > 0 ? sql.run(`DELETE FROM live_holders WHERE request_id IN (${marks(acted.length)})`, acted) : undefined,
    ]);
  }

  /** A request's live descendants (its child tokens, then theirs, ...), with their tokens' jtis; with `all`, ended ones too. */
  async function descendantsOf(sql: Sql, id: string, all = false): Promise<{ request: RequestRecord; jti: string | null }[]> {
    const rows = await sql.all<RequestRow & { jti: string | null }>(
      `WITH RECURSIVE line (id, depth) AS (
         SELECT id, 1 FROM requests WHERE parent_id = ?
         UNION ALL SELECT r.id, line.depth + 1 FROM requests r JOIN line ON r.parent_id = line.id)
       SELECT r.*, i.jti FROM line JOIN requests r ON r.id = line.id LEFT JOIN issuances i ON i.request_id = r.id
       ${all ? '' : `WHERE r.status IN ${LIVE_SQL}`} ORDER BY line.depth, r.created_at, r.id`,
      [id],
    );
    return rows.map((row) => ({ request: toRequest(row), jti: row.jti }));
  }

  /** Revokes live requests (read under this operation's locks) with the same fields, in one statement. */
  async function revokeAll(sql: Sql, requests: readonly RequestRecord[], fields: TransitionFields): Promise<void> {
    if (requests.length === 0) return;
    const columns = transitionColumns(fields);
    const ids = requests.map((r) => r.id);
    const [changed] = await Promise.all([
      sql.run(
        `UPDATE requests SET status = 'revoked'${columns.map(([column]) => `, ${column} = ?`).join('')} WHERE id IN (${marks(ids.length)}) AND status IN ${LIVE_SQL}`,
        [...columns.map(([, value]) => value), ...ids],
      ),
      settle(sql, requests.map((request) => ({ request, to: 'revoked' as const }))),
    ]);
    if (changed !== requests.length) throw new Error('a locked descendant changed status during its revocation');
  }

  /** Moves due requests (locked by this transaction) to `expired` in one statement. */
  async function expire(sql: Sql, requests: readonly RequestRecord[], now: number): Promise<void> {
    if (requests.length === 0) return;
    const ids = requests.map((r) => r.id);
    const [changed] = await Promise.all([
      sql.run(`UPDATE requests SET status = 'expired', ended_at = ? WHERE id IN (${marks(ids.length)}) AND status IN ${LIVE_SQL}`, [now, ...ids]),
      settle(sql, requests.map((request) => ({ request, to: 'expired' as const }))),
    ]);
    if (changed !== requests.length) throw new Error('a locked request changed status during its sweep');
  }

  /**
   * Due requests this sweep may change, up to `limit`: each claimed with the holders its change
   * touches (other replicas' sweeps and requests in flight keep theirs), then read again under
   * that claim, as one may have moved on since the first look. Those held elsewhere are passed
   * over for the next due ones, so that a batch comes back short only when nothing more is due
   * that it could take: a busy holder's rows never hold back the rest of the sweep (its job stops
   * at a short batch), and its own wait for the next run.
   */
  async function claimed(sql: Sql, claim: Maintenance['claim'], due: string, params: readonly unknown[], limit: number): Promise<RequestRecord[]> {
    const first = (await sql.all<RequestRow>(`SELECT * FROM requests WHERE ${due} ORDER BY expires_at LIMIT ?`, [...params, limit])).map(toRequest);
    if (!engine.lockByName) return first;
    const ids: string[] = [];
    const passed: string[] = [];
    let candidates = first;
    let asked = limit;
    for (let round = 0; candidates.length > 0 && round < MAX_CLAIM_ROUNDS; round += 1) {
      const taken = await claim(candidates.map((request) => [`request:${request.id}`, ...requestKeys(request)]));
      candidates.forEach((request, i) => (taken[i] ? ids : passed).push(request.id));
      if (ids.length === limit || candidates.length < asked) break;
      asked = limit - ids.length;
      candidates = (
        await sql.all<RequestRow>(`SELECT * FROM requests WHERE ${due} AND id NOT IN (${marks(passed.length + ids.length)}) ORDER BY expires_at LIMIT ?`, [
          ...params, ...passed, ...ids, asked,
        ])
      ).map(toRequest);
    }
    if (ids.length === 0) return [];
    return (await sql.all<RequestRow>(`SELECT * FROM requests WHERE id IN (${marks(ids.length)}) AND ${due} ORDER BY expires_at`, [...ids, ...params])).map(toRequest);
  }

  // ---- DPoP proofs ----

  /** Uses a proof once: false when its jti was seen within its window, here or on any replica. */
  const useProof = async (sql: Sql, proof: ProofUse): Promise<boolean> =>
    (await sql.run('INSERT INTO dpop_proofs (jti, expires_at) VALUES (?, ?) ON CONFLICT (jti) DO NOTHING', [proof.jti, proof.expiresAt])) === 1;

  /** A proof's lock: two replicas using one jti at once judge it one after the other. */
  const proofLocks = (proof: ProofUse | undefined): string[] => (engine.lockByName && proof ? [`dpop:${proof.jti}`] : []);

  // ---- duties ----

  /**
   * The first participation of the probe's participants in another step of one of its objects
   * that still binds. For a change to a request, neither the request's own participations nor
   * those in the step it was recorded in count: a reload that renamed that step since made it no
   * other step (participations are recorded by step name).
   */
  async function dutyFinding(sql: Sql, probe: DutyProbe, now: number, requestId = ''): Promise<DutyFinding | undefined> {
    const counted = [...new Set(probe.participants.flatMap(countedKeys))];
    // Every step at once; the first in the probe's order that finds one is the answer.
    const found = await Promise.all(
      probe.steps.map((step) =>
        sql.get<{ step: string; request_id: string }>(
          `SELECT p.step, p.request_id FROM duty_participants p JOIN requests r ON r.id = p.request_id
           WHERE p.duty = ? AND p.object = ? AND p.holder IN (${marks(counted.length)}) AND p.step NOT IN (${marks(1 + step.formerly.length)}) AND p.request_id <> ?
             AND p.step NOT IN (SELECT s.step FROM duty_steps s WHERE s.duty = p.duty AND s.object = p.object AND s.request_id = ?)
             AND ((r.status IN ('pending_approval', 'approved') AND r.expires_at > ?)
               OR (r.issued_at IS NOT NULL AND (CASE WHEN r.ended_at IS NOT NULL AND r.ended_at < r.expires_at THEN r.ended_at ELSE r.expires_at END) > ?))
           LIMIT 1`,
          [step.duty, step.object, ...counted, step.step, ...step.formerly, requestId, requestId, now, step.endedAfter],
        ),
      ),
    );
    const i = found.findIndex((row) => row !== undefined);
    const step = probe.steps[i];
    const row = found[i];
    return step && row ? { duty: step.duty, object: step.object, step: row.step, requestId: row.request_id } : undefined;
  }

  /**
   * Records the request in the probe's steps (its chain of custody) and the probe's participants
   * as taking part in them. Again for a request already recorded, it adds only what is new: an
   * approver, or a step the running configuration made of one of its scopes since.
   */
  async function takePart(sql: Sql, probe: DutyProbe, request: Pick<RequestRecord, 'id' | 'createdAt'>): Promise<void> {
    const { steps } = probe;
    const recorded = [...new Set(probe.participants.flatMap((holder) => recordedKeys(holder.identity, holder.person?.key ?? null)))];
    const rows = steps.flatMap((step) => recorded.map((holder) => [step.duty, step.object, holder, step.step, request.id]));
    await Promise.all([
      // Each new step numbered next in its object's chain: the object's lock (or SQLite's one
      // writer) is held, so no two takers read the same last number; a step already recorded
      // keeps its own. A probe names each object of a duty once.
      sql.run(
        `INSERT INTO duty_steps (duty, object, created_at, request_id, step, position)
         VALUES ${steps.map(() => '(?, ?, ?, ?, ?, (SELECT coalesce(max(position), 0) + 1 FROM duty_steps WHERE duty = ? AND object = ?))').join(', ')}
         ON CONFLICT (duty, object, created_at, request_id) DO NOTHING`,
        steps.flatMap((step) => [step.duty, step.object, request.createdAt, request.id, step.step, step.duty, step.object]),
      ),
      rows.length === 0
        ? undefined
        : sql.run(
            `INSERT INTO duty_participants (duty, object, holder, step, request_id) VALUES ${rows.map(() => '(?, ?, ?, ?, ?)').join(', ')}
             ON CONFLICT DO NOTHING`,
            rows.flat(),
          ),
    ]);
  }

  /** One lock per object: two operations on one object's steps, on any replica, are judged one after the other. */
  const dutyLocks = (probe: DutyProbe | undefined): string[] => (engine.lockByName && probe ? probe.steps.map((step) => `duty:${step.duty}\n${step.object}`) : []);

  // ---- admission ----

  /** A holder's windows and loads: what its limits are judged on. */
  async function holderFacts(sql: Sql, holder: Holder, now: number, windows: Map<string, RateWindow>): Promise<HolderFacts> {
    const identityKey = identityHolder(holder.identity);
    const personKeys = holder.person?.same ?? [];
    const keys = countedKeys(holder);
    const second = Math.floor(now / 1000);
    const [rows, loads] = await Promise.all([
      sql.all<{ holder: string; second: number; counts: string }>(`SELECT holder, second, counts FROM caller_rates WHERE holder IN (${marks(keys.length)})`, keys),
      sql.all<{ holder: string; live: number; pending: number }>(`SELECT holder, live, pending FROM holder_load WHERE holder IN (${marks(keys.length)})`, keys),
    ]);
    for (const row of rows) windows.set(row.holder, decodeWindow(row.second, row.counts));
    const windowOf = (which: readonly string[]) => merge(which.flatMap((key) => windows.get(key) ?? []), second);
    const sum = (which: readonly string[], field: 'live' | 'pending') => loads.filter((l) => which.includes(l.holder)).reduce((total, l) => total + l[field], 0);
    return {
      recent: { identity: windowOf([identityKey]), person: windowOf(personKeys) },
      live: { identity: sum([identityKey], 'live'), person: sum(personKeys, 'live') },
      pending: { identity: sum([identityKey], 'pending'), person: sum(personKeys, 'pending') },
    };
  }

  /** The first live grant of the holder's keys holding one of the conflicting scopes, with its scopes. */
  async function conflictOf(sql: Sql, keys: readonly string[], conflicting: readonly string[], now: number) {
    // Driven by live_scopes: the few rows of the conflicting scopes, never every live request.
    const found = await sql.get<{ request_id: string; holder: string; scopes: string }>(
      `SELECT l.request_id, l.holder, (SELECT r.scopes FROM requests r WHERE r.id = l.request_id) AS scopes FROM live_scopes l
       WHERE l.holder IN (${marks(keys.length)}) AND l.scope IN (${marks(conflicting.length)})
         AND EXISTS (SELECT 1 FROM requests r WHERE r.id = l.request_id AND r.status IN ${LIVE_SQL} AND r.expires_at > ?)
       LIMIT 1`,
      [...keys, ...conflicting, now],
    );
    return found && { requestId: found.request_id, holder: found.holder, scopes: JSON.parse(found.scopes) as string[] };
  }

  /**
   * Break-glass grants issued after `since`, up to `cap`, of the rows `where` selects. A child
   * token of a break-glass grant is no new use: its parent was counted.
   */
  async function breakGlassQuota(sql: Sql, where: string, params: readonly unknown[], since: number, cap: number) {
    const found = await sql.get<{ n: number; oldest: number | null }>(
      `SELECT count(*) AS n, min(issued_at) AS oldest FROM
         (SELECT issued_at FROM requests WHERE ${where} AND break_glass = ${dialect.true} AND parent_id IS NULL AND issued_at > ? LIMIT ?) quota`,
      [...params, since, cap],
    );
    return { count: found?.n ?? 0, oldest: found?.oldest ?? null };
  }

  /**
   * The facts an admission is judged on, read at once, and the holders' stored rate windows
   * (which the admission then counts into). At a limit, when the holder's soonest grant ends is
   * read after: only then is it worth reading.
   */
  async function admissionFacts(sql: Sql, probe: AdmissionProbe): Promise<{ facts: AdmissionFacts; windows: Map<string, RateWindow> }> {
    const { holder, now } = probe;
    const identityKey = identityHolder(holder.identity);
    const personKeys = holder.person?.same ?? [];
    const keys = countedKeys(holder);
    const windows = new Map<string, RateWindow>();
    const noQuota = { count: 0, oldest: null };
    const bg = probe.breakGlass;
    const [principal, actors, refusals, parent, fresh, conflict, duty, breakGlass] = await Promise.all([
      holderFacts(sql, holder, now, windows),
      Promise.all(probe.actors.map((actor) => holderFacts(sql, actor, now, windows))),
      // Refusals recorded this minute, for the principal and each actor: the most of them caps
      // what this one records (an agent acting for many people is one caller).
      sql.get<{ refusals_recorded: number | null }>(
        `SELECT max(refusals_recorded) AS refusals_recorded FROM caller_minutes WHERE minute = ? AND holder IN (${marks(1 + probe.actors.length)})`,
        [minuteStart(now), identityKey, ...probe.actors.map((actor) => identityHolder(actor.identity))],
      ),
      probe.parent !== undefined ? getRequest(sql, probe.parent) : undefined,
      probe.proof ? useProof(sql, probe.proof) : true,
      probe.conflicting.length > 0 ? conflictOf(sql, keys, probe.conflicting, now) : undefined,
      probe.duties ? dutyFinding(sql, probe.duties, now) : undefined,
      bg &&
        Promise.all([
          breakGlassQuota(sql, 'requester_iss = ? AND requester_sub = ?', [holder.identity.iss, holder.identity.sub], bg.since, bg.cap),
          personKeys.length > 0 ? breakGlassQuota(sql, `person IN (${marks(personKeys.length)})`, personKeys, bg.since, bg.cap) : noQuota,
        ]),
    ]);
    const facts: AdmissionFacts = { ...principal, actors, refusalsRecorded: refusals?.refusals_recorded ?? 0 };
    if (probe.parent !== undefined) facts.parent = parent;
    if (!fresh) facts.replayed = true;
    if (conflict) facts.conflict = { requestId: conflict.requestId, scopes: conflict.scopes, byPerson: conflict.holder !== identityKey };
    if (duty) facts.duty = duty;
    if (breakGlass) facts.breakGlass = { identity: breakGlass[0], person: breakGlass[1] };
    // At a limit, the counts without the grants past their end, and the soonest end: the principal's and each actor's.
    await Promise.all([atLimit(sql, holder, facts, probe.limits, now), ...probe.actors.map((actor, i) => atLimit(sql, actor, actors[i] as HolderFacts, probe.limits, now))]);
    return { facts, windows };
  }

  /**
   * A holder at a limit: its counts without the grants past their end, and the soonest end of one
   * still held. The tallies drop a grant only when the scheduler marks it ended, within
   * `scheduler.interval`, and one past its end is held no longer: neither one it asked for (read
   * from the requests' own rows), nor one it holds as an actor, nor one an agent it launched holds
   * (read from live_holders). At most a limit's worth of rows per key, however long its history.
   */
  async function atLimit(sql: Sql, holder: Holder, facts: HolderFacts, limits: AdmissionProbe['limits'], now: number): Promise<void> {
    const at = Math.max(facts.live.identity, facts.live.person) >= limits.live || Math.max(facts.pending.identity, facts.pending.person) >= limits.pending;
    if (!at) return;
    const identityKey = identityHolder(holder.identity);
    const keys = countedKeys(holder);
    const personKeys = holder.person?.same ?? [];
    const byIdentity: RowsOf = { where: 'requester_iss = ? AND requester_sub = ?', params: [holder.identity.iss, holder.identity.sub] };
    const byPerson: RowsOf | undefined = personKeys.length > 0 ? { where: `person IN (${marks(personKeys.length)})`, params: personKeys } : undefined;
    const [identityLapsed, personLapsed, actingLapsed, askedEnds, actingEnds] = await Promise.all([
      lapsed(sql, byIdentity, now),
      byPerson ? lapsed(sql, byPerson, now) : { live: 0, pending: 0 },
      sql.all<{ holder: string; live: number; pending: number }>(
        `SELECT holder, count(*) AS live, sum(pending) AS pending FROM live_holders WHERE holder IN (${marks(keys.length)}) AND expires_at <= ? GROUP BY holder`,
        [...keys, now],
      ),
      Promise.all([soonest(sql, LIVE_SQL, byIdentity, byPerson, now), soonest(sql, "('pending_approval')", byIdentity, byPerson, now)]),
      // The first end ahead under each key, read from its index in order: one row each, however many it holds.
      sql.get<Record<string, number | null>>(
        `SELECT ${keys
          .flatMap((_, i) => [
            `(SELECT expires_at FROM live_holders WHERE holder = ? AND expires_at > ? ORDER BY expires_at LIMIT 1) AS live${i}`,
            `(SELECT expires_at FROM live_holders WHERE holder = ? AND expires_at > ? AND pending = 1 ORDER BY expires_at LIMIT 1) AS pending${i}`,
          ])
          .join(', ')}`,
        keys.flatMap((key) => [key, now, key, now]),
      ),
    ]);
    // Per key, as the tallies count: the identity's row, and the person's under each of its keys.
    const acting = (field: 'live' | 'pending', person: boolean) =>
      actingLapsed.filter((row) => (row.holder !== identityKey) === person).reduce((sum, row) => sum + Number(row[field]), 0);
    facts.live = { identity: facts.live.identity - identityLapsed.live - acting('live', false), person: facts.live.person - personLapsed.live - acting('live', true) };
    facts.pending = {
      identity: facts.pending.identity - identityLapsed.pending - acting('pending', false),
      person: facts.pending.person - personLapsed.pending - acting('pending', true),
    };
    const first = (asked: number | null, field: 'live' | 'pending') => {
      const ends = [asked, ...keys.map((_, i) => actingEnds?.[`${field}${i}`])].filter((end) => end !== null && end !== undefined).map(Number);
      return ends.length > 0 ? Math.min(...ends) : null;
    };
    facts.soonestEnd = first(askedEnds[0], 'live');
    facts.soonestPendingEnd = first(askedEnds[1], 'pending');
  }

  /** Which rows of `requests` a holder asked for: a condition and its parameters. */
  type RowsOf = { where: string; params: readonly unknown[] };

  /** Live requests of those rows whose end has passed, not yet marked (at most a limit's worth: a holder's tally). */
  async function lapsed(sql: Sql, rows: RowsOf, now: number): Promise<{ live: number; pending: number }> {
    const found = await sql.get<{ live: number; pending: number | null }>(
      `SELECT count(*) AS live, sum(CASE WHEN status = 'pending_approval' THEN 1 ELSE 0 END) AS pending
       FROM requests WHERE ${rows.where} AND status IN ${LIVE_SQL} AND expires_at <= ?`,
      [...rows.params, now],
    );
    return { live: Number(found?.live ?? 0), pending: Number(found?.pending ?? 0) };
  }

  /** The earliest deadline still ahead among the holder's requests in `statuses` (an SQL list). */
  async function soonest(sql: Sql, statuses: string, byIdentity: RowsOf, byPerson: RowsOf | undefined, now: number): Promise<number | null> {
    const found = await sql.get<{ at: number | null }>(
      `SELECT min(at) AS at FROM (
         SELECT min(expires_at) AS at FROM requests WHERE ${byIdentity.where} AND status IN ${statuses} AND expires_at > ?
         ${byPerson ? `UNION ALL SELECT min(expires_at) AS at FROM requests WHERE ${byPerson.where} AND status IN ${statuses} AND expires_at > ?` : ''}) soonest`,
      [...byIdentity.params, now, ...(byPerson ? [...byPerson.params, now] : [])],
    );
    return found?.at === null || found?.at === undefined ? null : Number(found.at);
  }

  /** One more request in each holder's windows: its identity's, and its person's under the key this request records. */
  function countRequest(sql: Sql, probe: AdmissionProbe, windows: ReadonlyMap<string, RateWindow>): Promise<number> {
    const second = Math.floor(probe.now / 1000);
    const keys = [...new Set([probe.holder, ...probe.actors].flatMap((holder) => recordedKeys(holder.identity, holder.person?.key ?? null)))];
    return sql.run(
      `INSERT INTO caller_rates (holder, second, counts) VALUES ${keys.map(() => '(?, ?, ?)').join(', ')}
       ON CONFLICT (holder) DO UPDATE SET second = excluded.second, counts = excluded.counts`,
      keys.flatMap((key) => {
        const counted = record(windows.get(key) ?? emptyWindow(second), second);
        return [key, counted.second, encodeWindow(counted)];
      }),
    );
  }

  /**
   * One more refusal this minute: recorded (an event) for the principal and each actor, whose
   * counts cap it; or only counted (reported later in one event), for the caller alone, so that
   * the minute's report counts it once: the principal, or for a delegated request the actor that
   * asked, so that an agent refused for many principals is one report, not one per principal.
   */
  function countRefusal(sql: Sql, probe: AdmissionProbe, recorded: boolean): Promise<number> {
    const { identity } = recorded ? probe.holder : (probe.actors[0] ?? probe.holder);
    return tallyRefusal(sql, probe.now, recorded, [identity, ...(recorded ? probe.actors.map((actor) => actor.identity) : [])]);
  }

  /** Counts one refusal into each caller's minute, recorded (an event) or only counted. */
  function tallyRefusal(sql: Sql, now: number, recorded: boolean, callers: readonly Principal[]): Promise<number> {
    // One row per holder (an actor met twice in a chain is one caller): a statement may not update a row twice.
    const rows = new Map<string, unknown[]>();
    for (const caller of callers) {
      const holder = identityHolder(caller);
      if (!rows.has(holder)) rows.set(holder, [recorded ? 1 : 0, recorded ? 0 : 1, caller.iss, caller.sub]);
    }
    const minute = minuteStart(now);
    return sql.run(
      `INSERT INTO caller_minutes (holder, minute, refusals_recorded, refusals_counted, actor_iss, actor_sub) VALUES ${[...rows.keys()].map(() => '(?, ?, ?, ?, ?, ?)').join(', ')}
       ON CONFLICT (holder, minute) DO UPDATE SET
         refusals_recorded = caller_minutes.refusals_recorded + excluded.refusals_recorded,
         refusals_counted = caller_minutes.refusals_counted + excluded.refusals_counted`,
      [...rows].flatMap(([holder, values]) => [holder, minute, ...values]),
    );
  }

  /** Writes what a change decided, every statement at once; a mismatch found after throws, which undoes them all. */
  async function applyChange<R>(sql: Sql, emit: Emit, state: RequestState | undefined, change: RequestChange<R>): Promise<R> {
    const writes: Promise<unknown>[] = [];
    if (change.transition) {
      if (!state) throw new Error('a transition needs a request');
      writes.push(transition(sql, state.request, change.transition.from, change.transition.to, change.transition.fields));
    }
    if (change.approval) {
      const a = change.approval;
      writes.push(
        sql.run(
          `INSERT INTO approvals (request_id, approver_iss, approver_sub, person, decision, reason, digest, at) VALUES (${marks(8)})`,
          [a.requestId, a.approver.iss, a.approver.sub, a.person, a.decision, a.reason, a.digest, a.at],
        ),
      );
    }
    if (change.cascade) {
      const { ids, fields } = change.cascade;
      writes.push(revokeAll(sql, (state?.descendants ?? []).filter((d) => ids.includes(d.request.id)).map((d) => d.request), fields));
    }
    if (change.participants && state) writes.push(takePart(sql, change.participants, state.request));
    if (change.issuance) writes.push(insertIssuance(sql, change.issuance, state?.request.scopes ?? []));
    if (change.review) {
      const { outcome, notes, reviewer, at } = change.review;
      const reviewed = async () => {
        const changed = await sql.run(
          `UPDATE break_glass_reviews SET outcome = ?, notes = ?, reviewer_iss = ?, reviewer_sub = ?, reviewed_at = ?
           WHERE request_id = ? AND outcome IS NULL`,
          [outcome, notes, reviewer.iss, reviewer.sub, at, state?.request.id],
        );
        if (changed !== 1) throw new Error(`review of ${state?.request.id} is not pending`);
      };
      writes.push(reviewed());
    }
    await Promise.all(writes);
    emit(change.events);
    return change.result;
  }

  /**
   * What an operation on one request locks: the request, and its holders' counts, which its
   * transitions change. A request's holders never change, so they are read before the lock.
   */
  async function requestLocks(id: string, descendants: boolean | 'all' = false): Promise<string[]> {
    if (!engine.lockByName) return [];
    // With its descendants: theirs too (a child created meanwhile waits on this request's lock).
    const [request, line] = await Promise.all([getRequest(read, id), descendants ? descendantsOf(read, id).then((found) => found.map((d) => d.request)) : []]);
    return [...(request ? [request] : []), ...line].flatMap((r) => [`request:${r.id}`, ...requestKeys(r)]).concat(request ? [] : [`request:${id}`]);
  }

  const admissionLocks = (probe: AdmissionProbe): string[] =>
    engine.lockByName
      ? [
          ...[probe.holder, ...probe.actors].flatMap(countedKeys),
          ...dutyLocks(probe.duties),
          ...(probe.parent !== undefined ? [`request:${probe.parent}`] : []),
          ...proofLocks(probe.proof),
        ]
      : [];

  const store: Store = {
    engine: engine.name,

    requests: {
      get: (id) => getRequest(read, id),
      state: (id) => stateOf(read, id),
      states: (requests) => states(read, requests),
      async owned(owner, filter, after, limit) {
        // Statuses as callers see them: a live request past its deadline is expired.
        const [status, statusParams] =
          filter.status === 'expired'
            ? [`AND (r.status = 'expired' OR (r.status IN ${LIVE_SQL} AND r.expires_at <= ?))`, [filter.now]]
            : filter.status !== undefined && isLive(filter.status)
              ? ['AND r.status = ? AND r.expires_at > ?', [filter.status, filter.now]]
              : filter.status !== undefined
                ? ['AND r.status = ?', [filter.status]]
                : ['', []];
        const job = jobKey(owner.boundClaims);
        const before = [after?.createdAt ?? Number.MAX_SAFE_INTEGER, after?.id ?? ''];
        // Each half walks its own index newest first; a request both asked for and acted in is read once.
        const rows = await read.all<RequestRow>(
          `SELECT * FROM (SELECT r.* FROM requests r
              WHERE r.requester_iss = ? AND r.requester_sub = ? AND r.job = ? AND (r.created_at, r.id) < (?, ?) ${status}
              ORDER BY r.created_at DESC, r.id DESC LIMIT ?) AS asked
           UNION ALL
           SELECT * FROM (SELECT r.* FROM request_actors a JOIN requests r ON r.id = a.request_id
              WHERE a.sub = ? AND a.iss = ? AND (a.created_at, a.request_id) < (?, ?) ${status}
                AND NOT (r.requester_iss = ? AND r.requester_sub = ? AND r.job = ?)
              ORDER BY a.created_at DESC, a.request_id DESC LIMIT ?) AS acted
           ORDER BY created_at DESC, id DESC LIMIT ?`,
          [
            owner.iss, owner.sub, job, ...before, ...statusParams, limit,
            owner.sub, owner.iss, ...before, ...statusParams, owner.iss, owner.sub, job, limit,
            limit,
          ],
        );
        return rows.map(toRequest);
      },
      pending: async (now, after, limit) =>
        (
          await read.all<RequestRow>(
            `SELECT * FROM requests WHERE status = 'pending_approval' AND expires_at > ?
               AND (created_at, id) > (?, ?) ORDER BY created_at, id LIMIT ?`,
            [now, after?.createdAt ?? -1, after?.id ?? '', limit],
          )
        ).map(toRequest),
    },

    issuances: {
      get: async (jti) => mapOptional(await read.get<IssuanceRow>('SELECT * FROM issuances WHERE jti = ?', [jti]), toIssuance),
      revokedUnexpired: async (now, afterJti, limit) =>
        (
          await read.all<IssuanceRow>(
            `SELECT i.* FROM issuances i JOIN requests r ON r.id = i.request_id
             WHERE r.status = 'revoked' AND i.expires_at > ? AND i.jti > ? ORDER BY i.jti LIMIT ?`,
            [now, afterJti ?? '', limit],
          )
        ).map(toIssuance),
    },

    reviews: {
      list: async (state, after, limit) =>
        (
          await read.all<RequestRow & { due_at: number }>(
            `SELECT r.*, b.due_at FROM break_glass_reviews b JOIN requests r ON r.id = b.request_id
             WHERE b.outcome IS ${state === 'pending' ? '' : 'NOT '}NULL AND (b.due_at, b.request_id) > (?, ?)
             ORDER BY b.due_at, b.request_id LIMIT ?`,
            [after?.dueAt ?? -1, after?.requestId ?? '', limit],
          )
        ).map((r) => ({ request: toRequest(r), dueAt: r.due_at })),
      async pendingCounts() {
        const counts = await read.get<{ pending: number; overdue: number }>(
          'SELECT count(*) AS pending, count(overdue_at) AS overdue FROM break_glass_reviews WHERE outcome IS NULL',
        );
        return { pending: counts?.pending ?? 0, overdue: counts?.overdue ?? 0 };
      },
    },

    events: {
      head: () => read.get<{ seq: number; hash: string }>(HEAD_SQL),
      // Through the writer on SQLite: it starts after the sync of the batches before it, and
      // answers after its own, which covers the WAL this head was read from (another process's
      // commits too). PostgreSQL's commits are durable before they are visible: one more read.
      durableHead: () => engine.maintain(undefined, (sql) => sql.get<{ seq: number; hash: string }>(HEAD_SQL)),
      after: async (afterSeq, limit) => (await read.all<EventRow>('SELECT * FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?', [afterSeq, limit])).map(toEvent),
      links: async (afterSeq, limit) => (await read.all<EventRow>('SELECT * FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?', [afterSeq, limit])).map(toLink),
      at: async (seq) => mapOptional(await read.get<EventRow>('SELECT * FROM audit_events WHERE seq = ?', [seq]), toEvent),
      latest: async (type) => mapOptional(await read.get<EventRow>('SELECT * FROM audit_events WHERE type = ? ORDER BY seq DESC LIMIT 1', [type]), toEvent),
    },

    audit: {
      async custody(duty, object, after, limit) {
        const rows = await read.all<RequestRow & { step: string; position: number }>(
          `SELECT s.step, s.position, r.* FROM duty_steps s JOIN requests r ON r.id = s.request_id
           WHERE s.duty = ? AND s.object = ? AND s.position > ?
           ORDER BY s.position LIMIT ?`,
          [duty, object, after ?? 0, limit],
        );
        const found = await states(read, rows.map(toRequest));
        return rows.map((row, i) => ({ step: row.step, position: Number(row.position), state: found[i] as RequestState }));
      },
      async issuances(filter, after, limit, now) {
        // A request yields at most one token, so (issued_at, request id) orders issuances uniquely.
        // Every filter has an index in that order. By scope alone, the listing walks issued_scopes,
        // whose key carries the same two values; with a filter whose grants are few whatever the
        // history (a subject's, break-glass ones, the live ones), those are walked and each is
        // probed for the scope: walking a scope every pipeline uses for the few that match would
        // read its whole history for one page.
        const fewer = filter.subject !== undefined || filter.breakGlass === true || filter.status === 'issued';
        const byScope = filter.scope !== undefined && !fewer;
        const [source, issuedAt, id] = byScope
          ? ['issued_scopes s JOIN requests r ON r.id = s.request_id', 's.issued_at', 's.request_id']
          : ['requests r', 'r.issued_at', 'r.id'];
        const where = [`${issuedAt} IS NOT NULL`];
        const params: unknown[] = [now];
        const add = (clause: string, ...values: unknown[]) => {
          where.push(clause);
          params.push(...values);
        };
        if (byScope) add('s.scope = ?', filter.scope);
        else if (filter.scope !== undefined) {
          add('EXISTS (SELECT 1 FROM issued_scopes s WHERE s.scope = ? AND s.issued_at = r.issued_at AND s.request_id = r.id)', filter.scope);
        }
        if (filter.since !== undefined) add(`${issuedAt} >= ?`, filter.since);
        if (filter.until !== undefined) add(`${issuedAt} < ?`, filter.until);
        if (filter.subject !== undefined) add('r.requester_sub = ?', filter.subject);
        // The few requests naming an object or a type, found by their index; the planner walks whichever is fewer.
        if (filter.type !== undefined && filter.object !== undefined) add('r.id IN (SELECT request_id FROM request_objects WHERE type = ? AND object = ?)', filter.type, filter.object);
        else if (filter.object !== undefined) add('r.id IN (SELECT request_id FROM request_objects WHERE object = ?)', filter.object);
        else if (filter.type !== undefined) add('r.id IN (SELECT request_id FROM request_objects WHERE type = ?)', filter.type);
        if (filter.actor !== undefined) add('r.id IN (SELECT request_id FROM request_actors WHERE sub = ?)', filter.actor);
        // Literals, not parameters, so the partial index on break-glass grants applies.
        if (filter.breakGlass !== undefined) add(`r.break_glass = ${filter.breakGlass ? dialect.true : dialect.false}`);
        // Statuses as they are now: an issued token past its expiry counts as expired before the
        // scheduler says so. Expired is most grants: walked in time order, not by the status index.
        const status = dialect.unindexed('r.status');
        if (filter.status === 'issued') add(`r.status = 'issued' AND r.expires_at > ?`, now);
        if (filter.status === 'expired') add(`(${status} = 'expired' OR (${status} = 'issued' AND r.expires_at <= ?))`, now);
        if (filter.status === 'revoked') add(`r.status = 'revoked'`);
        const select = (from: string, seq: string, condition: string, order: string) =>
          `SELECT i.jti, r.id AS request_id, r.root_id, r.issued_at, i.expires_at, r.requester_iss, r.requester_sub, r.task_id, r.scopes,
                  r.audience, r.justification, r.break_glass, r.authorization_details, r.act, r.ended_at, r.revoke_reason, ${seq} AS seq,
                  CASE WHEN r.status = 'issued' AND i.expires_at <= ? THEN 'expired' ELSE r.status END AS status
           FROM ${from} JOIN issuances i ON i.request_id = r.id
           WHERE ${where.join(' AND ')} AND ${condition}
           ORDER BY ${order} LIMIT ?`;
        // Listed is every token up to the position whose event is in the chain up to its `seq`
        // (the chain grows in commit order). A token committed later behind the position (the
        // same millisecond, a slower commit, another replica's clock) is listed first, by seq:
        // those few are found from the chain's end (CROSS JOIN keeps SQLite to that order).
        const seen = Number((await read.get<{ seq: number | null }>('SELECT max(seq) AS seq FROM audit_events'))?.seq ?? 0);
        const late = after
          ? await read.all<IssuanceAuditRow>(
              select(
                `audit_events e CROSS JOIN ${source}`,
                'e.seq',
                `${id} = e.request_id AND (${issuedAt}, ${id}) <= (?, ?) AND e.type = 'token.issued' AND e.seq > ? AND e.seq <= ?`,
                'e.seq',
              ),
              [...params, after.issuedAt, after.requestId, after.seq, seen, limit + 1],
            )
          : [];
        // Past the position, in time order, each token's event probed as the index walks.
        const issuedSeq = "(SELECT e.seq FROM audit_events e WHERE e.request_id = r.id AND e.type = 'token.issued')";
        const next = late.length > limit
          ? []
          : await read.all<IssuanceAuditRow>(
              select(source, issuedSeq, `(${issuedAt}, ${id}) > (?, ?) AND ${issuedSeq} <= ?`, `${issuedAt}, ${id}`),
              [...params, after?.issuedAt ?? -1, after?.requestId ?? '', seen, limit + 1 - late.length],
            );
        const rows = [...late, ...next];
        if (rows.length === 0) return { late: [], next: [], seen };
        // Approvers in the order they decided, on every engine: a child's are its root grant's,
        // whose approval covers it, as its token says.
        const ids = [...new Set(rows.map((row) => row.root_id))];
        const approvals = await read.all<{ request_id: string; approver_iss: string; approver_sub: string; at: number }>(
          `SELECT request_id, approver_iss, approver_sub, at FROM approvals WHERE request_id IN (${marks(ids.length)}) AND decision = 'approve'
           ORDER BY at, approver_iss, approver_sub`,
          ids,
        );
        const record = (row: IssuanceAuditRow) =>
          toIssuanceAudit(
            row,
            approvals.filter((a) => a.request_id === row.root_id).map((a) => ({ iss: a.approver_iss, sub: a.approver_sub, at: a.at })),
          );
        return { late: late.map(record), next: next.map(record), seen };
      },
      async entitlements(grants, since) {
        // One statement per chunk of grants, each grant a range of issued_scopes_by_policy: the
        // work is the tokens issued since `since`, never the whole history. A VALUES list's
        // columns are column1, column2 on both engines.
        const used: EntitlementUse[] = [];
        for (let at = 0; at < grants.length; at += ENTITLEMENTS_CHUNK) {
          const chunk = grants.slice(at, at + ENTITLEMENTS_CHUNK);
          const rows = await read.all<{ policy: string; scope: string; issued: number; last_issued_at: number | null }>(
            `SELECT g.column1 AS policy, g.column2 AS scope, count(s.request_id) AS issued, max(s.issued_at) AS last_issued_at
             FROM (VALUES ${chunk.map(() => '(?, ?)').join(', ')}) g
             LEFT JOIN issued_scopes s ON s.policy = g.column1 AND s.scope = g.column2 AND s.issued_at >= ?
             GROUP BY g.column1, g.column2`,
            [...chunk.flatMap((grant) => [grant.policy, grant.scope]), since],
          );
          const found = new Map(rows.map((row) => [`${row.policy}\n${row.scope}`, row]));
          for (const grant of chunk) {
            const row = found.get(`${grant.policy}\n${grant.scope}`);
            used.push({ ...grant, issued: Number(row?.issued ?? 0), lastIssuedAt: row?.last_issued_at ?? null });
          }
        }
        return used;
      },
      async events(filter, afterSeq, limit, throughSeq) {
        const where = ['seq > ?'];
        const params: unknown[] = [afterSeq];
        const add = (clause: string, value: unknown) => {
          where.push(clause);
          params.push(value);
        };
        if (filter.since !== undefined) add('at >= ?', filter.since);
        if (filter.until !== undefined) add('at < ?', filter.until);
        if (filter.type !== undefined) add('type = ?', filter.type);
        if (filter.requestId !== undefined) add('request_id = ?', filter.requestId);
        if (throughSeq !== undefined) add('seq <= ?', throughSeq);
        return (await read.all<EventRow>(`SELECT * FROM audit_events WHERE ${where.join(' AND ')} ORDER BY seq LIMIT ?`, [...params, limit])).map(toEvent);
      },
    },

    keys: {
      active: () => activeKeys(read),
      get: async (kid) => mapOptional(await read.get<KeyRow>('SELECT * FROM signing_keys WHERE kid = ?', [kid]), toKey),
      add: (decide, event) =>
        engine.maintain(KEYS_LOCK, async (sql, { append }) => {
          const key = decide(await activeKeys(sql));
          if (!key) return false;
          await sql.run('INSERT INTO signing_keys (kid, alg, public_jwk, created_at, activates_at, retired_at, sealed_private_key) VALUES (?, ?, ?, ?, ?, ?, ?)', [
            key.kid, key.alg, JSON.stringify(key.publicJwk), key.createdAt, key.activatesAt, key.retiredAt, key.sealedPrivateKey,
          ]);
          await append([event(key)]);
          return true;
        }),
      retire: (kid, now, expiredBy, event) =>
        engine.maintain(KEYS_LOCK, async (sql, { append }) => {
          if (await sql.get('SELECT 1 AS used FROM issuances WHERE kid = ? AND expires_at > ? LIMIT 1', [kid, expiredBy])) return false;
          // Its tokens have all expired: the private half has nothing left to sign.
          if ((await sql.run('UPDATE signing_keys SET retired_at = ?, sealed_private_key = NULL WHERE kid = ? AND retired_at IS NULL', [now, kid])) !== 1) return false;
          await append([event]);
          return true;
        }),
      seal: (kid, sealedPrivateKey, event) =>
        engine.maintain(KEYS_LOCK, async (sql, { append }) => {
          const sealed = await sql.run('UPDATE signing_keys SET sealed_private_key = ? WHERE kid = ? AND sealed_private_key IS NULL AND retired_at IS NULL', [
            sealedPrivateKey,
            kid,
          ]);
          if (sealed !== 1) return false;
          await append([event]);
          return true;
        }),
    },

    async admit<R>(probe: AdmissionProbe, decide: (facts: AdmissionFacts) => Admission<R>) {
      const { result } = await engine.operate(admissionLocks(probe), async (sql, emit) => {
        const { facts, windows } = await admissionFacts(sql, probe);
        const admission = decide(facts);
        // Either way the request counts; then what was decided, the request's row before the rows that refer to it.
        const writes: Promise<unknown>[] = [countRequest(sql, probe, windows)];
        if ('refuse' in admission) {
          writes.push(countRefusal(sql, probe, admission.refuse.event !== undefined));
          await Promise.all(writes);
          if (admission.refuse.event) emit([admission.refuse.event]);
          return admission.result;
        }
        const { request, issuance, reviewDueAt, events } = admission.admit;
        writes.push(insertRequest(sql, request));
        if (probe.duties) writes.push(takePart(sql, probe.duties, request));
        if (reviewDueAt !== undefined) writes.push(sql.run('INSERT INTO break_glass_reviews (request_id, due_at) VALUES (?, ?)', [request.id, reviewDueAt]));
        if (issuance) writes.push(insertIssuance(sql, issuance, request.scopes));
        await Promise.all(writes);
        emit(events);
        return admission.result;
      });
      return result;
    },

    async change(id, decide, options = {}) {
      const locks = [...(await requestLocks(id, options.descendants)), ...dutyLocks(options.duties), ...proofLocks(options.proof)];
      const { result } = await engine.operate(locks, async (sql, emit) => {
        // The request's state and every fact about it at once; the last two only matter when it exists.
        const [state, descendants, duty] = await Promise.all([
          stateOf(sql, id),
          options.descendants ? descendantsOf(sql, id, options.descendants === 'all') : undefined,
          options.duties ? dutyFinding(sql, options.duties, clock(), id) : undefined,
        ]);
        if (state && descendants) state.descendants = descendants;
        const facts: ChangeFacts = {};
        if (state && duty) facts.duty = duty;
        // A proof is used up only on a request that exists.
        if (state && options.proof && !(await useProof(sql, options.proof))) facts.replayed = true;
        return applyChange(sql, emit, state, decide(state, facts));
      });
      return result;
    },

    async refuse(caller, now, decide) {
      const holder = identityHolder(caller);
      // Under the caller's own lock, as its admissions: two refusals at once count one after the other.
      await engine.operate(engine.lockByName ? [holder] : [], async (sql, emit) => {
        const minute = await sql.get<{ refusals_recorded: number }>('SELECT refusals_recorded FROM caller_minutes WHERE holder = ? AND minute = ?', [holder, minuteStart(now)]);
        const event = decide(minute?.refusals_recorded ?? 0);
        await tallyRefusal(sql, now, event !== undefined, [caller]);
        if (event) emit([event]);
      });
    },

    append: async (entries) => (await engine.operate([], async (_sql, emit) => emit(entries))).events,

    appendIfLatest: (entry, latestSeq) =>
      engine.maintain(APPEND_IF_LATEST_LOCK, async (sql, { append }) => {
        const newest = await sql.get<{ seq: number }>('SELECT seq FROM audit_events WHERE type = ? ORDER BY seq DESC LIMIT 1', [entry.type]);
        return (newest?.seq ?? 0) === latestSeq ? (await append([entry]))[0] : undefined;
      }),

    sweep: {
      grants: (now, limit, event) =>
        engine.maintain(undefined, async (sql, { append, claim }) => {
          const due = await claimed(sql, claim, `status = 'issued' AND expires_at <= ?`, [now], limit);
          const jtis = due.length === 0 ? [] : await sql.all<{ request_id: string; jti: string }>(
            `SELECT request_id, jti FROM issuances WHERE request_id IN (${marks(due.length)})`,
            due.map((grant) => grant.id),
          );
          await expire(sql, due, now);
          await append(due.map((grant) => event(grant, jtis.find((i) => i.request_id === grant.id)?.jti ?? null)));
          return due.map((grant) => ({ ...grant, status: 'expired' as const, endedAt: now }));
        }),
      requests: (now, limit, event) =>
        engine.maintain(undefined, async (sql, { append, claim }) => {
          const due = await claimed(sql, claim, `status IN ('pending_approval', 'approved') AND expires_at <= ?`, [now], limit);
          await expire(sql, due, now);
          await append(due.map(event));
          return due;
        }),
      overdueReviews: (now, limit, event) =>
        engine.maintain(undefined, async (sql, { append }) => {
          const due = (
            await sql.all<ReviewRow>(
              `SELECT * FROM break_glass_reviews WHERE outcome IS NULL AND overdue_at IS NULL AND due_at < ?
               ORDER BY due_at LIMIT ? ${dialect.skipLocked()}`,
              [now, limit],
            )
          ).map(toReview);
          if (due.length === 0) return [];
          const ids = due.map((review) => review.requestId);
          await sql.run(`UPDATE break_glass_reviews SET overdue_at = ? WHERE request_id IN (${marks(ids.length)})`, [now, ...ids]);
          await append(due.map((review) => event({ ...review, overdueAt: now })));
          const requests = (await sql.all<RequestRow>(`SELECT * FROM requests WHERE id IN (${marks(ids.length)})`, ids)).map(toRequest);
          return ids.map((id) => requests.find((r) => r.id === id) as RequestRecord);
        }),
      refusals: (now, limit, event) =>
        engine.maintain(undefined, async (sql, { append }) => {
          // A minute is reported once it is closed for every process: one ended over a minute
          // ago, so that a refusal whose clock read it (another replica's clock a little behind,
          // or one that read it before this report and commits after) still counts into its one
          // event rather than a second.
          const closed = minuteStart(now) - MINUTE_MS;
          const tallies = await sql.all<{ holder: string; minute: number; refusals_counted: number; actor_iss: string; actor_sub: string }>(
            `SELECT holder, minute, refusals_counted, actor_iss, actor_sub FROM caller_minutes
             WHERE minute < ? AND refusals_counted > 0 ORDER BY minute LIMIT ? ${dialect.skipLocked()}`,
            [closed, limit],
          );
          for (const tally of tallies) {
            await sql.run('UPDATE caller_minutes SET refusals_counted = 0 WHERE holder = ? AND minute = ?', [tally.holder, tally.minute]);
          }
          await append(tallies.map((tally) => event({ actor: { iss: tally.actor_iss, sub: tally.actor_sub }, minuteStart: tally.minute, count: tally.refusals_counted })));
          // Closed minutes with nothing left to report go, windows a minute idle, and loads at zero.
          const minutes = await sql.run(
            `DELETE FROM caller_minutes WHERE (holder, minute) IN
               (SELECT holder, minute FROM caller_minutes WHERE minute < ? AND refusals_counted = 0 LIMIT ? ${dialect.skipLocked()})`,
            [closed, limit],
          );
          const windows = await sql.run(
            `DELETE FROM caller_rates WHERE holder IN
               (SELECT holder FROM caller_rates WHERE second <= ? LIMIT ? ${dialect.skipLocked()})`,
            [Math.floor(now / 1000) - WINDOW_SECONDS, limit],
          );
          // A caller holding nothing live or pending has nothing to count: its row comes back with its next request.
          const loads = await sql.run(
            `DELETE FROM holder_load WHERE live = 0 AND pending = 0 AND holder IN
               (SELECT holder FROM holder_load WHERE live = 0 AND pending = 0 LIMIT ? ${dialect.skipLocked()})`,
            [limit],
          );
          return { reported: tallies.length, more: Math.max(tallies.length, minutes, windows, loads) >= limit };
        }),
      proofs: (now, limit) =>
        engine.maintain(undefined, (sql) =>
          sql.run(`DELETE FROM dpop_proofs WHERE jti IN (SELECT jti FROM dpop_proofs WHERE expires_at <= ? LIMIT ? ${dialect.skipLocked()})`, [now, limit]),
        ),
    },

    probe: () => engine.probe(),
    close: () => engine.close(),
  };
  return store;
}
