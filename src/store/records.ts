import type { JWK } from 'jose';
import type { AuthorizationDetail } from '../shared/authorization-details.js';

/** An identity as records show it: issuer URL and subject. */
export interface Principal {
  iss: string;
  sub: string;
}

export type RequestStatus = 'pending_approval' | 'approved' | 'issued' | 'denied' | 'expired' | 'revoked';

/** Statuses in which a request may still give, or gives, access. */
export const LIVE_STATUSES: readonly RequestStatus[] = ['pending_approval', 'approved', 'issued'];

/**
 * One actor of a delegated request (an agent acting for the principal), as judged when it acted:
 * its identity and issuer name, the key its person is recorded under, its job, and the claims
 * its token carried (a running configuration's rules are judged on them again later).
 */
export interface ActorRecord extends Principal {
  idp: string;
  person: string | null;
  initiator: string | null;
  boundClaims: Record<string, unknown> | null;
  claims: Record<string, unknown>;
}

/** Times are milliseconds since the epoch. */
export interface RequestRecord {
  id: string;
  requester: Principal;
  /** Configured name of the requester's issuer. */
  requesterIdp: string;
  /** The raw `initiatorClaim` value of a workload requester: who started the job. */
  initiator: string | null;
  /**
   * The requester's person key (CONTRACT section 1, "People"): its own for a person, the job
   * initiator's for a workload; null for a workload that names no initiator.
   */
  person: string | null;
  /** The `bindClaims` values of the requesting job, nested as in its token; null when unbound. */
  boundClaims: Record<string, unknown> | null;
  taskId: string;
  scopes: string[];
  audience: string;
  ttlSeconds: number;
  justification: string | null;
  breakGlass: boolean;
  /** The objects the request names (RFC 9396), as it named them; null when none. */
  authorizationDetails: AuthorizationDetail[] | null;
  /** Delegated: the actors, current (outermost) first; null when the principal asked itself. */
  act: ActorRecord[] | null;
  /** The `delegation` rule that allowed the current actor. */
  delegationRule: string | null;
  /** A child token's parent request; null for a root grant. */
  parentId: string | null;
  /** The root grant of the line (a root is its own). */
  rootId: string;
  /** A root's subject claims as verified (null on children, whose subject is their root's). */
  subjectClaims: Record<string, unknown> | null;
  /** The thumbprint of the key its token is bound to (RFC 9449 `cnf.jkt`); null for a bearer token. */
  dpopJkt: string | null;
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
  /** The approver's person key: approvals count distinct people. */
  person: string | null;
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

/** A token about to be recorded: with, per scope, the policy that granted it (the first in configuration order). */
export interface NewIssuance extends IssuanceRecord {
  grantedBy: Readonly<Record<string, string>>;
}

/** One (policy, scope) a configuration grants, as the entitlements report counts it. */
export interface GrantKey {
  policy: string;
  scope: string;
}

/** How often a grant was used since a time: tokens issued under that policy for that scope. */
export interface EntitlementUse extends GrantKey {
  issued: number;
  /** The latest such token's issue time; null when none was issued. */
  lastIssuedAt: number | null;
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
  /** When it may start signing: published in the JWKS from `createdAt`, used from here on. */
  activatesAt: number;
  retiredAt: number | null;
  /**
   * The private half sealed under the key-encryption key (tokens/key-encryption.ts), so every
   * replica given that key may sign with it; null where it lives in a key file, and once retired.
   */
  sealedPrivateKey: string | null;
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
  /** An `authorization_details` entry's type, and its identifier (compared as `objectKey`). */
  type?: string | undefined;
  object?: string | undefined;
  /** The `sub` of any actor of the chain. */
  actor?: string | undefined;
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
  authorizationDetails: AuthorizationDetail[] | null;
  act: ActorRecord[] | null;
  revokedAt: number | null;
  revokeReason: string | null;
  /** The seq of its `token.issued` event: where it joined the chain, in commit order. */
  seq: number;
}

/** Where an issuance listing stands: its time-ordered position, and the chain's seq up to which every token before it was listed. */
export interface IssuancePosition {
  issuedAt: number;
  requestId: string;
  seq: number;
}

/** CONTRACT section 5 event types, and the broker's own additions. */
export type AuditEventType =
  | 'config.loaded'
  | 'request.created'
  | 'request.refused'
  | 'decision.refused'
  | 'request.denied'
  | 'request.approved'
  | 'request.expired'
  | 'request.revoked'
  | 'approval.recorded'
  | 'token.issued'
  | 'token.revoked'
  | 'grant.expired'
  | 'breakglass.used'
  | 'breakglass.reviewed'
  | 'breakglass.review_overdue'
  | 'key.rotated'
  | 'key.retired'
  | 'key.sealed'
  | 'audit.checkpoint'
  | 'notify.failed';

/** An event to append to the audit log; the store gives it its time, seq and hashes. */
export interface AuditEntry {
  type: AuditEventType;
  /** Who acted; absent when the broker itself did (the scheduler, start-up). */
  actor?: Principal | null;
  requestId?: string | null;
  /** Never a token, never a secret. */
  data?: Record<string, unknown>;
}

export interface EventFilter {
  /** ISO 8601 UTC bounds on `at`. */
  since?: string | undefined;
  until?: string | undefined;
  type?: string | undefined;
  requestId?: string | undefined;
}
