import { canonicalParts, type ChainLink } from '../shared/chain-hash.js';
import type {
  ActorRecord,
  ApprovalRecord,
  AuditEventRecord,
  BreakGlassReviewRecord,
  GrantStatus,
  IssuanceAuditRecord,
  IssuanceRecord,
  Principal,
  RequestRecord,
  RequestStatus,
  ReviewOutcome,
  SigningKeyRecord,
} from './records.js';
import type { AuthorizationDetail } from '../shared/authorization-details.js';

/**
 * Rows as both engines return them (PostgreSQL's BIGINT parsed to numbers, its BOOLEAN and
 * SQLite's 0/1 both read through Boolean), and their records. Times are integers (ms).
 */

export const mapOptional = <R, T>(value: R | undefined, map: (row: R) => T): T | undefined =>
  value === undefined ? undefined : map(value);

export const principal = (iss: string | null, sub: string | null): Principal | null =>
  iss === null || sub === null ? null : { iss, sub };

export interface RequestRow {
  id: string;
  requester_iss: string;
  requester_sub: string;
  requester_idp: string;
  initiator: string | null;
  person: string | null;
  job: string;
  task_id: string;
  scopes: string;
  audience: string;
  ttl_seconds: number;
  justification: string | null;
  break_glass: number | boolean;
  authorization_details: string | null;
  act: string | null;
  delegation_rule: string | null;
  parent_id: string | null;
  root_id: string | null;
  subject_claims: string | null;
  dpop_jkt: string | null;
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
  person: r.person,
  boundClaims: r.job === '' ? null : (JSON.parse(r.job) as Record<string, unknown>),
  taskId: r.task_id,
  scopes: JSON.parse(r.scopes) as string[],
  audience: r.audience,
  ttlSeconds: r.ttl_seconds,
  justification: r.justification,
  breakGlass: Boolean(r.break_glass),
  authorizationDetails: r.authorization_details === null ? null : (JSON.parse(r.authorization_details) as AuthorizationDetail[]),
  act: r.act === null ? null : (JSON.parse(r.act) as ActorRecord[]),
  delegationRule: r.delegation_rule,
  parentId: r.parent_id,
  // Rows from before delegation are roots of their own.
  rootId: r.root_id ?? r.id,
  subjectClaims: r.subject_claims === null ? null : (JSON.parse(r.subject_claims) as Record<string, unknown>),
  dpopJkt: r.dpop_jkt,
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

export interface ApprovalRow {
  request_id: string;
  approver_iss: string;
  approver_sub: string;
  person: string | null;
  decision: 'approve' | 'deny';
  reason: string;
  digest: string;
  at: number;
}

export const toApproval = (r: ApprovalRow): ApprovalRecord => ({
  requestId: r.request_id,
  approver: { iss: r.approver_iss, sub: r.approver_sub },
  person: r.person,
  decision: r.decision,
  reason: r.reason,
  digest: r.digest,
  at: r.at,
});

export interface IssuanceRow {
  jti: string;
  request_id: string;
  token_sha256: string;
  kid: string;
  issued_at: number;
  expires_at: number;
}

export const toIssuance = (r: IssuanceRow): IssuanceRecord => ({
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

/**
 * A stored event as a link of the chain, from the row as it is stored rather than as read back:
 * `data` as its stored text, and an actor half missing kept so. A row rewritten with the same
 * meaning in other bytes (a duplicate key that SQL's JSON functions read, a stray issuer) is then
 * not what was hashed, and verification stops at it.
 */
export function toLink(r: EventRow): ChainLink {
  const actor = r.actor_iss === null && r.actor_sub === null ? null : { iss: r.actor_iss, sub: r.actor_sub };
  const { before, after } = canonicalParts({ actor, at: r.at, type: r.type, requestId: r.request_id }, r.data);
  return { seq: r.seq, prevHash: r.prev_hash, hash: r.hash, canonical: `${before}${r.seq}${after}` };
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

export interface IssuanceAuditRow {
  jti: string;
  request_id: string;
  root_id: string;
  issued_at: number;
  expires_at: number;
  requester_iss: string;
  requester_sub: string;
  task_id: string;
  scopes: string;
  audience: string;
  justification: string | null;
  break_glass: number | boolean;
  authorization_details: string | null;
  act: string | null;
  ended_at: number | null;
  revoke_reason: string | null;
  status: GrantStatus;
  seq: number;
}

export const toIssuanceAudit = (r: IssuanceAuditRow, approvers: IssuanceAuditRecord['approvers']): IssuanceAuditRecord => ({
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
  approvers,
  breakGlass: Boolean(r.break_glass),
  authorizationDetails: r.authorization_details === null ? null : (JSON.parse(r.authorization_details) as AuthorizationDetail[]),
  act: r.act === null ? null : (JSON.parse(r.act) as ActorRecord[]),
  revokedAt: r.status === 'revoked' ? r.ended_at : null,
  revokeReason: r.status === 'revoked' ? r.revoke_reason : null,
  seq: Number(r.seq),
});

export interface KeyRow {
  kid: string;
  alg: string;
  public_jwk: string;
  created_at: number;
  activates_at: number;
  retired_at: number | null;
  sealed_private_key: string | null;
}

export const toKey = (r: KeyRow): SigningKeyRecord => ({
  kid: r.kid,
  alg: r.alg,
  publicJwk: JSON.parse(r.public_jwk),
  createdAt: r.created_at,
  activatesAt: r.activates_at,
  retiredAt: r.retired_at,
  sealedPrivateKey: r.sealed_private_key,
});

export interface ReviewRow {
  request_id: string;
  due_at: number;
  outcome: ReviewOutcome | null;
  notes: string | null;
  reviewer_iss: string | null;
  reviewer_sub: string | null;
  reviewed_at: number | null;
  overdue_at: number | null;
}

export const toReview = (r: ReviewRow): BreakGlassReviewRecord => ({
  requestId: r.request_id,
  dueAt: r.due_at,
  outcome: r.outcome,
  notes: r.notes,
  reviewer: principal(r.reviewer_iss, r.reviewer_sub),
  reviewedAt: r.reviewed_at,
  overdueAt: r.overdue_at,
});
