import type { JWK } from 'jose';

/** An identity as records show it: issuer URL and subject. */
export interface Principal {
  iss: string;
  sub: string;
}

export type RequestStatus = 'pending_approval' | 'approved' | 'issued' | 'denied' | 'expired' | 'revoked';

/** Statuses in which a request may still give, or gives, access. */
export const LIVE_STATUSES: readonly RequestStatus[] = ['pending_approval', 'approved', 'issued'];

/** Times are milliseconds since the epoch. */
export interface RequestRecord {
  id: string;
  requester: Principal;
  /** Configured name of the requester's issuer. */
  requesterIdp: string;
  initiator: string | null;
  taskId: string;
  scopes: string[];
  audience: string;
  ttlSeconds: number;
  justification: string | null;
  breakGlass: boolean;
  policyIds: string[];
  digest: string;
  approvalsRequired: number;
  status: RequestStatus;
  createdAt: number;
  /** Deadline of the current status: approval, collection, or the token's expiry. */
  expiresAt: number;
  decidedAt: number | null;
  issuedAt: number | null;
  endedAt: number | null;
  revokeReason: string | null;
  revokedBy: Principal | null;
}

export type Decision = 'approve' | 'deny';

export interface ApprovalRecord {
  requestId: string;
  approver: Principal;
  decision: Decision;
  reason: string;
  digest: string;
  at: number;
}

export interface IssuanceRecord {
  jti: string;
  requestId: string;
  tokenSha256: string;
  kid: string;
  issuedAt: number;
  expiresAt: number;
}

export interface AuditEventRecord {
  seq: number;
  /** ISO 8601 UTC, exactly as hashed. */
  at: string;
  type: string;
  actor: Principal | null;
  requestId: string | null;
  data: Record<string, unknown>;
  prevHash: string;
  hash: string;
}

export interface SigningKeyRecord {
  kid: string;
  alg: string;
  publicJwk: JWK;
  createdAt: number;
  retiredAt: number | null;
}

export type ReviewOutcome = 'justified' | 'unjustified';

export interface BreakGlassReviewRecord {
  requestId: string;
  dueAt: number;
  outcome: ReviewOutcome | null;
  notes: string | null;
  reviewer: Principal | null;
  reviewedAt: number | null;
  overdueAt: number | null;
}

export type GrantStatus = 'issued' | 'expired' | 'revoked';

/** Which issuances an auditor asks for. Times in ms. */
export interface IssuanceFilter {
  since?: number | undefined;
  until?: number | undefined;
  subject?: string | undefined;
  scope?: string | undefined;
  status?: GrantStatus | undefined;
  breakGlass?: boolean | undefined;
}

/** One minted token with what an auditor asks of it: who, what, when, approved by whom, why. */
export interface IssuanceAuditRecord {
  jti: string;
  requestId: string;
  requester: Principal;
  taskId: string;
  scopes: string[];
  audience: string;
  justification: string | null;
  issuedAt: number;
  expiresAt: number;
  /** Effective now: an issued token past its expiry is expired. */
  status: GrantStatus;
  approvers: (Principal & { at: number })[];
  breakGlass: boolean;
  revokedAt: number | null;
  revokeReason: string | null;
}

export interface EventFilter {
  /** ISO 8601 UTC bounds on `at`. */
  since?: string | undefined;
  until?: string | undefined;
  type?: string | undefined;
  requestId?: string | undefined;
}
