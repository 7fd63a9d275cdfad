import Database from 'better-sqlite3';
import { canonicalJson } from '../shared/canonical-json.js';
import { Unavailable } from '../shared/errors.js';
import { migrate, openDatabase, type Db } from './database.js';
import type {
  ApprovalRecord,
  AuditEventRecord,
  BreakGlassReviewRecord,
  EventFilter,
  GrantStatus,
  IssuanceAuditRecord,
  IssuanceFilter,
  IssuanceRecord,
  Principal,
  RequestRecord,
  RequestStatus,
  ReviewOutcome,
  SigningKeyRecord,
} from './records.js';

/** Fields a status transition may set besides the status itself. */
export interface TransitionFields {
  expiresAt?: number;
  decidedAt?: number;
  issuedAt?: number;
  endedAt?: number;
  revokeReason?: string;
  revokedBy?: Principal | null;
}

/**
 * The broker's records. Every method is synchronous (better-sqlite3), so a `transaction`
 * holds the write lock from its first read to its commit: a check and the write it guards
 * cannot be split by another request, in this process or another.
 */
export interface Store {
  /**
   * Runs `work` in one IMMEDIATE transaction and commits, or rolls back on any throw. A failure
   * of SQLite itself (disk full, I/O error, lock timeout) surfaces as `Unavailable`.
   */
  transaction<T>(work: () => T): T;
  requests: {
    insert(request: RequestRecord): void;
    get(id: string): RequestRecord | undefined;
    /** The requester's pending, approved and issued requests whose deadline has not passed. */
    live(requester: Principal, now: number): RequestRecord[];
    /** The requester's break-glass grants issued after `since`: how many, and when the oldest was. */
    breakGlassSince(requester: Principal, since: number): { count: number; oldest: number | null };
    /** Moves one request from one of `from` to `to`; undefined when it was in no such status. */
    transition(id: string, from: readonly RequestStatus[], to: RequestStatus, fields?: TransitionFields): RequestRecord | undefined;
    /** Moves every request in `from` whose deadline is at or before `now` to `to`. */
    sweep(from: RequestStatus, to: RequestStatus, now: number): RequestRecord[];
    /** Pending requests not past their deadline, oldest first, after the given request id. */
    pending(now: number, after: { createdAt: number; id: string } | undefined, limit: number): RequestRecord[];
  };
  approvals: {
    insert(approval: ApprovalRecord): void;
    list(requestId: string): ApprovalRecord[];
  };
  issuances: {
    insert(issuance: IssuanceRecord): void;
    get(jti: string): IssuanceRecord | undefined;
    forRequest(requestId: string): IssuanceRecord | undefined;
    /** Revoked tokens not yet expired, by jti. */
    revokedUnexpired(now: number, afterJti: string | undefined, limit: number): IssuanceRecord[];
    /** Whether any token signed by `kid` expires after `now`. */
    anyUnexpiredSignedBy(kid: string, now: number): boolean;
  };
  events: {
    head(): { seq: number; hash: string } | undefined;
    insert(event: AuditEventRecord): void;
    /** Events with seq above `afterSeq`, in order: the chain as stored. */
    after(afterSeq: number, limit: number): AuditEventRecord[];
  };
  keys: {
    /** Unretired keys, newest first. */
    active(): SigningKeyRecord[];
    insert(key: SigningKeyRecord): void;
    retire(kid: string, now: number): boolean;
  };
  reviews: {
    insert(requestId: string, dueAt: number): void;
    get(requestId: string): BreakGlassReviewRecord | undefined;
    record(requestId: string, outcome: ReviewOutcome, notes: string, reviewer: Principal, at: number): boolean;
    /** Flags pending reviews due at or before `now` that were never flagged; returns them. */
    flagOverdue(now: number): BreakGlassReviewRecord[];
    /** Break-glass requests whose review is pending (or done), by due time. */
    list(state: 'pending' | 'done', after: { dueAt: number; requestId: string } | undefined, limit: number): { request: RequestRecord; dueAt: number }[];
  };
  audit: {
    /** Issuances matching `filter`, in (issued_at, request id) order, after the given position. */
    issuances(filter: IssuanceFilter, after: { issuedAt: number; requestId: string } | undefined, limit: number, now: number): IssuanceAuditRecord[];
    /** Events matching `filter`, in seq order, after `afterSeq`. */
    events(filter: EventFilter, afterSeq: number, limit: number): AuditEventRecord[];
  };
  /** Proves the store can still write (for /readyz). */
  probeWrite(now: number): void;
  readonly db: Db;
  close(): void;
}

/** Opens (creating if need be) and migrates the database file, then returns the store over it. */
export function openStore(path: string): Store {
  const db = openDatabase(path);
  try {
    migrate(db);
  } catch (error) {
    db.close();
    throw error;
  }
  return createStore(db);
}

export function createStore(db: Db): Store {
  const cache = new Map<string, Database.Statement>();
  const sql = (text: string): Database.Statement => {
    let statement = cache.get(text);
    if (!statement) {
      statement = db.prepare(text);
      cache.set(text, statement);
    }
    return statement;
  };
  const rows = <T>(text: string, ...params: unknown[]) => sql(text).all(...params) as T[];
  const row = <T>(text: string, ...params: unknown[]) => sql(text).get(...params) as T | undefined;
  const run = (text: string, ...params: unknown[]) => sql(text).run(...params);

  return {
    db,

    transaction(work) {
      try {
        return db.transaction(work).immediate();
      } catch (error) {
        if (error instanceof Database.SqliteError) {
          throw new Unavailable('The broker could not record this change; nothing was granted. Try again shortly.', {
            cause: error,
            internal: { sqlite: error.code, message: error.message },
          });
        }
        throw error;
      }
    },

    requests: {
      insert(r) {
        run(
          `INSERT INTO requests (id, requester_iss, requester_sub, requester_idp, initiator, task_id, scopes, audience,
             ttl_seconds, justification, break_glass, policy_ids, digest, approvals_required, status, created_at,
             expires_at, decided_at, issued_at, ended_at, revoke_reason, revoked_by_iss, revoked_by_sub)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          r.id, r.requester.iss, r.requester.sub, r.requesterIdp, r.initiator, r.taskId, JSON.stringify(r.scopes),
          r.audience, r.ttlSeconds, r.justification, r.breakGlass ? 1 : 0, JSON.stringify(r.policyIds), r.digest,
          r.approvalsRequired, r.status, r.createdAt, r.expiresAt, r.decidedAt, r.issuedAt, r.endedAt,
          r.revokeReason, r.revokedBy?.iss ?? null, r.revokedBy?.sub ?? null,
        );
      },
      get: (id) => mapOptional(row<RequestRow>('SELECT * FROM requests WHERE id = ?', id), toRequest),
      live: (requester, now) =>
        rows<RequestRow>(
          `SELECT * FROM requests WHERE requester_iss = ? AND requester_sub = ?
             AND status IN ('pending_approval', 'approved', 'issued') AND expires_at > ?`,
          requester.iss, requester.sub, now,
        ).map(toRequest),
      breakGlassSince: (requester, since) =>
        row<{ count: number; oldest: number | null }>(
          `SELECT count(*) AS count, min(issued_at) AS oldest FROM requests
           WHERE requester_iss = ? AND requester_sub = ? AND break_glass = 1 AND issued_at > ?`,
          requester.iss, requester.sub, since,
        ) ?? { count: 0, oldest: null },
      transition(id, from, to, fields = {}) {
        const { assignments, values } = transitionAssignments(fields);
        const updated = row<RequestRow>(
          `UPDATE requests SET status = ?${assignments} WHERE id = ? AND status IN (${from.map(() => '?').join(', ')}) RETURNING *`,
          to, ...values, id, ...from,
        );
        return mapOptional(updated, toRequest);
      },
      sweep: (from, to, now) =>
        rows<RequestRow>(
          `UPDATE requests SET status = ?, ended_at = ? WHERE status = ? AND expires_at <= ? RETURNING *`,
          to, now, from, now,
        ).map(toRequest),
      pending: (now, after, limit) =>
        rows<RequestRow>(
          `SELECT * FROM requests WHERE status = 'pending_approval' AND expires_at > ?
             AND (created_at, id) > (?, ?) ORDER BY created_at, id LIMIT ?`,
          now, after?.createdAt ?? -1, after?.id ?? '', limit,
        ).map(toRequest),
    },

    approvals: {
      insert(a) {
        run(
          `INSERT INTO approvals (request_id, approver_iss, approver_sub, decision, reason, digest, at)
           VALUES (?, ?, ?, ?, ?, ?, ?)`,
          a.requestId, a.approver.iss, a.approver.sub, a.decision, a.reason, a.digest, a.at,
        );
      },
      list: (requestId) =>
        rows<ApprovalRow>('SELECT * FROM approvals WHERE request_id = ? ORDER BY at, approver_iss, approver_sub', requestId).map(
          toApproval,
        ),
    },

    issuances: {
      insert(i) {
        run(
          'INSERT INTO issuances (jti, request_id, token_sha256, kid, issued_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)',
          i.jti, i.requestId, i.tokenSha256, i.kid, i.issuedAt, i.expiresAt,
        );
        run(
          `INSERT INTO issued_scopes (scope, issued_at, request_id)
           SELECT s.value, ?, r.id FROM requests r, json_each(r.scopes) s WHERE r.id = ?`,
          i.issuedAt, i.requestId,
        );
      },
      get: (jti) => mapOptional(row<IssuanceRow>('SELECT * FROM issuances WHERE jti = ?', jti), toIssuance),
      forRequest: (requestId) =>
        mapOptional(row<IssuanceRow>('SELECT * FROM issuances WHERE request_id = ?', requestId), toIssuance),
      revokedUnexpired: (now, afterJti, limit) =>
        rows<IssuanceRow>(
          `SELECT i.* FROM issuances i JOIN requests r ON r.id = i.request_id
           WHERE r.status = 'revoked' AND i.expires_at > ? AND i.jti > ? ORDER BY i.jti LIMIT ?`,
          now, afterJti ?? '', limit,
        ).map(toIssuance),
      anyUnexpiredSignedBy: (kid, now) =>
        row('SELECT 1 FROM issuances WHERE kid = ? AND expires_at > ? LIMIT 1', kid, now) !== undefined,
    },

    events: {
      head: () => row<{ seq: number; hash: string }>('SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1'),
      insert(e) {
        run(
          `INSERT INTO audit_events (seq, at, type, actor_iss, actor_sub, request_id, data, prev_hash, hash)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          e.seq, e.at, e.type, e.actor?.iss ?? null, e.actor?.sub ?? null, e.requestId, canonicalJson(e.data),
          e.prevHash, e.hash,
        );
      },
      after: (afterSeq, limit) =>
        rows<EventRow>('SELECT * FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?', afterSeq, limit).map(toEvent),
    },

    keys: {
      active: () =>
        rows<KeyRow>('SELECT * FROM signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC, kid DESC').map(toKey),
      insert(k) {
        run(
          'INSERT INTO signing_keys (kid, alg, public_jwk, created_at, retired_at) VALUES (?, ?, ?, ?, ?)',
          k.kid, k.alg, JSON.stringify(k.publicJwk), k.createdAt, k.retiredAt,
        );
      },
      retire: (kid, now) =>
        run('UPDATE signing_keys SET retired_at = ? WHERE kid = ? AND retired_at IS NULL', now, kid).changes === 1,
    },

    reviews: {
      insert(requestId, dueAt) {
        run('INSERT INTO break_glass_reviews (request_id, due_at) VALUES (?, ?)', requestId, dueAt);
      },
      get: (requestId) =>
        mapOptional(row<ReviewRow>('SELECT * FROM break_glass_reviews WHERE request_id = ?', requestId), toReview),
      record: (requestId, outcome, notes, reviewer, at) =>
        run(
          `UPDATE break_glass_reviews SET outcome = ?, notes = ?, reviewer_iss = ?, reviewer_sub = ?, reviewed_at = ?
           WHERE request_id = ? AND outcome IS NULL`,
          outcome, notes, reviewer.iss, reviewer.sub, at, requestId,
        ).changes === 1,
      flagOverdue: (now) =>
        rows<ReviewRow>(
          `UPDATE break_glass_reviews SET overdue_at = ?
           WHERE outcome IS NULL AND overdue_at IS NULL AND due_at <= ? RETURNING *`,
          now, now,
        ).map(toReview),
      list: (state, after, limit) =>
        rows<RequestRow & { due_at: number }>(
          `SELECT r.*, b.due_at FROM break_glass_reviews b JOIN requests r ON r.id = b.request_id
           WHERE (b.outcome IS NULL) = ? AND (b.due_at, b.request_id) > (?, ?)
           ORDER BY b.due_at, b.request_id LIMIT ?`,
          state === 'pending' ? 1 : 0, after?.dueAt ?? -1, after?.requestId ?? '', limit,
        ).map((row) => ({ request: toRequest(row), dueAt: row.due_at })),
    },

    audit: {
      issuances(filter, after, limit, now) {
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
      events(filter, afterSeq, limit) {
        const { where, params, add } = conditions('seq > ?', afterSeq);
        if (filter.since !== undefined) add('at >= ?', filter.since);
        if (filter.until !== undefined) add('at < ?', filter.until);
        if (filter.type !== undefined) add('type = ?', filter.type);
        if (filter.requestId !== undefined) add('request_id = ?', filter.requestId);
        return rows<EventRow>(`SELECT * FROM audit_events WHERE ${where.join(' AND ')} ORDER BY seq LIMIT ?`, ...params, limit).map(toEvent);
      },
    },

    probeWrite(now) {
      this.transaction(() => run('UPDATE readiness_probe SET at = ? WHERE id = 1', now));
    },

    close() {
      if (!db.open) return;
      if (!db.readonly) db.pragma('optimize');
      db.close();
    },
  };
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

function transitionAssignments(fields: TransitionFields): { assignments: string; values: unknown[] } {
  const columns: [string, unknown][] = [];
  if (fields.expiresAt !== undefined) columns.push(['expires_at', fields.expiresAt]);
  if (fields.decidedAt !== undefined) columns.push(['decided_at', fields.decidedAt]);
  if (fields.issuedAt !== undefined) columns.push(['issued_at', fields.issuedAt]);
  if (fields.endedAt !== undefined) columns.push(['ended_at', fields.endedAt]);
  if (fields.revokeReason !== undefined) columns.push(['revoke_reason', fields.revokeReason]);
  if (fields.revokedBy !== undefined) {
    columns.push(['revoked_by_iss', fields.revokedBy?.iss ?? null], ['revoked_by_sub', fields.revokedBy?.sub ?? null]);
  }
  return {
    assignments: columns.map(([column]) => `, ${column} = ?`).join(''),
    values: columns.map(([, value]) => value),
  };
}

const mapOptional = <R, T>(value: R | undefined, map: (row: R) => T): T | undefined =>
  value === undefined ? undefined : map(value);

const principal = (iss: string | null, sub: string | null): Principal | null =>
  iss === null || sub === null ? null : { iss, sub };

interface RequestRow {
  id: string;
  requester_iss: string;
  requester_sub: string;
  requester_idp: string;
  initiator: string | null;
  task_id: string;
  scopes: string;
  audience: string;
  ttl_seconds: number;
  justification: string | null;
  break_glass: number;
  policy_ids: string;
  digest: string;
  approvals_required: number;
  status: RequestStatus;
  created_at: number;
  expires_at: number;
  decided_at: number | null;
  issued_at: number | null;
  ended_at: number | null;
  revoke_reason: string | null;
  revoked_by_iss: string | null;
  revoked_by_sub: string | null;
}

export const toRequest = (r: RequestRow): RequestRecord => ({
  id: r.id,
  requester: { iss: r.requester_iss, sub: r.requester_sub },
  requesterIdp: r.requester_idp,
  initiator: r.initiator,
  taskId: r.task_id,
  scopes: JSON.parse(r.scopes) as string[],
  audience: r.audience,
  ttlSeconds: r.ttl_seconds,
  justification: r.justification,
  breakGlass: r.break_glass === 1,
  policyIds: JSON.parse(r.policy_ids) as string[],
  digest: r.digest,
  approvalsRequired: r.approvals_required,
  status: r.status,
  createdAt: r.created_at,
  expiresAt: r.expires_at,
  decidedAt: r.decided_at,
  issuedAt: r.issued_at,
  endedAt: r.ended_at,
  revokeReason: r.revoke_reason,
  revokedBy: principal(r.revoked_by_iss, r.revoked_by_sub),
});

interface ApprovalRow {
  request_id: string;
  approver_iss: string;
  approver_sub: string;
  decision: 'approve' | 'deny';
  reason: string;
  digest: string;
  at: number;
}

const toApproval = (r: ApprovalRow): ApprovalRecord => ({
  requestId: r.request_id,
  approver: { iss: r.approver_iss, sub: r.approver_sub },
  decision: r.decision,
  reason: r.reason,
  digest: r.digest,
  at: r.at,
});

interface IssuanceRow {
  jti: string;
  request_id: string;
  token_sha256: string;
  kid: string;
  issued_at: number;
  expires_at: number;
}

const toIssuance = (r: IssuanceRow): IssuanceRecord => ({
  jti: r.jti,
  requestId: r.request_id,
  tokenSha256: r.token_sha256,
  kid: r.kid,
  issuedAt: r.issued_at,
  expiresAt: r.expires_at,
});

export interface EventRow {
  seq: number;
  at: string;
  type: string;
  actor_iss: string | null;
  actor_sub: string | null;
  request_id: string | null;
  data: string;
  prev_hash: string;
  hash: string;
}

export const toEvent = (r: EventRow): AuditEventRecord => ({
  seq: r.seq,
  at: r.at,
  type: r.type,
  actor: principal(r.actor_iss, r.actor_sub),
  requestId: r.request_id,
  data: JSON.parse(r.data) as Record<string, unknown>,
  prevHash: r.prev_hash,
  hash: r.hash,
});

interface IssuanceAuditRow {
  jti: string;
  request_id: string;
  issued_at: number;
  expires_at: number;
  requester_iss: string;
  requester_sub: string;
  task_id: string;
  scopes: string;
  audience: string;
  justification: string | null;
  break_glass: number;
  ended_at: number | null;
  revoke_reason: string | null;
  status: GrantStatus;
  approvers: string;
}

const toIssuanceAudit = (r: IssuanceAuditRow): IssuanceAuditRecord => ({
  jti: r.jti,
  requestId: r.request_id,
  requester: { iss: r.requester_iss, sub: r.requester_sub },
  taskId: r.task_id,
  scopes: JSON.parse(r.scopes) as string[],
  audience: r.audience,
  justification: r.justification,
  issuedAt: r.issued_at,
  expiresAt: r.expires_at,
  status: r.status,
  approvers: JSON.parse(r.approvers) as IssuanceAuditRecord['approvers'],
  breakGlass: r.break_glass === 1,
  revokedAt: r.status === 'revoked' ? r.ended_at : null,
  revokeReason: r.status === 'revoked' ? r.revoke_reason : null,
});

interface KeyRow {
  kid: string;
  alg: string;
  public_jwk: string;
  created_at: number;
  retired_at: number | null;
}

const toKey = (r: KeyRow): SigningKeyRecord => ({
  kid: r.kid,
  alg: r.alg,
  publicJwk: JSON.parse(r.public_jwk),
  createdAt: r.created_at,
  retiredAt: r.retired_at,
});

interface ReviewRow {
  request_id: string;
  due_at: number;
  outcome: ReviewOutcome | null;
  notes: string | null;
  reviewer_iss: string | null;
  reviewer_sub: string | null;
  reviewed_at: number | null;
  overdue_at: number | null;
}

const toReview = (r: ReviewRow): BreakGlassReviewRecord => ({
  requestId: r.request_id,
  dueAt: r.due_at,
  outcome: r.outcome,
  notes: r.notes,
  reviewer: principal(r.reviewer_iss, r.reviewer_sub),
  reviewedAt: r.reviewed_at,
  overdueAt: r.overdue_at,
});
