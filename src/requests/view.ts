import { actClaim } from '../delegation/index.js';
import { toIso } from '../shared/clock.js';
import { isLive, type BreakGlassReviewRecord, type RequestRecord, type RequestState, type RequestStatus } from '../store/index.js';

/**
 * A live request past its deadline is expired, whether or not the scheduler has swept it yet:
 * what callers see, and what the broker acts on, never lags the clock.
 */
export function effectiveStatus(request: RequestRecord, now: number): RequestStatus {
  return isLive(request.status) && request.expiresAt <= now ? 'expired' : request.status;
}

/**
 * CONTRACT section 4, `GET /v1/credentials/{id}`, plus who started the job, which job it is
 * bound to, and when and why it ended.
 */
export function requestView({ request, approvals, review, issuance }: RequestState, now: number) {
  return {
    request_id: request.id,
    status: effectiveStatus(request, now),
    requester: request.requester,
    ...(request.initiator !== null ? { initiator: request.initiator } : {}),
    ...(request.boundClaims !== null ? { bound_claims: request.boundClaims } : {}),
    task_id: request.taskId,
    scopes: request.scopes,
    audience: request.audience,
    ttl_seconds: request.ttlSeconds,
    justification: request.justification,
    break_glass: request.breakGlass,
    ...(request.authorizationDetails !== null ? { authorization_details: request.authorizationDetails } : {}),
    ...(request.act !== null ? { act: actClaim(request.act) } : {}),
    ...(request.parentId !== null ? { parent_id: request.parentId } : {}),
    digest: request.digest,
    approvals_required: request.approvalsRequired,
    approvals: approvals.map((a) => ({
      iss: a.approver.iss,
      sub: a.approver.sub,
      decision: a.decision,
      reason: a.reason,
      at: toIso(a.at),
    })),
    created_at: toIso(request.createdAt),
    expires_at: toIso(request.expiresAt),
    ...(request.issuedAt !== null ? { issued_at: toIso(request.issuedAt) } : {}),
    ...(issuance ? { jti: issuance.jti } : {}),
    ...(request.endedAt !== null && request.status !== 'issued' ? { ended_at: toIso(request.endedAt) } : {}),
    ...(request.revokeReason !== null ? { revoke_reason: request.revokeReason, revoked_by: request.revokedBy } : {}),
    ...(review ? { review: reviewView(review, now) } : {}),
  };
}

export type RequestView = ReturnType<typeof requestView>;

/**
 * A break-glass grant's post-review. A pending review is overdue once past its due time, whether
 * or not the scheduler has flagged it yet (the flag is what records and announces it once):
 * what callers see never lags the clock, as with a request's status.
 */
export function reviewView(review: BreakGlassReviewRecord, now: number) {
  return {
    status: review.outcome === null ? ('pending' as const) : ('done' as const),
    due_at: toIso(review.dueAt),
    overdue: review.outcome === null ? review.overdueAt !== null || review.dueAt < now : review.reviewedAt !== null && review.reviewedAt > review.dueAt,
    ...(review.outcome !== null
      ? { outcome: review.outcome, notes: review.notes, reviewer: review.reviewer, reviewed_at: toIso(review.reviewedAt as number) }
      : {}),
  };
}

/** A token as its holder receives it. */
export interface HandedToken {
  token: string;
  ttlSeconds: number;
  /** Its `exp`, in ms. */
  expiresAt: number;
}

/** CONTRACT section 4, the 201 of `POST /v1/credentials` and `/token`. */
export function issuedView(request: RequestRecord, token: HandedToken) {
  return {
    request_id: request.id,
    status: 'issued' as const,
    access_token: token.token,
    // RFC 9449 section 5: a bound token is of the DPoP type.
    token_type: request.dpopJkt !== null ? ('DPoP' as const) : ('Bearer' as const),
    expires_in: token.ttlSeconds,
    expires_at: toIso(token.expiresAt),
    scopes: request.scopes,
    audience: request.audience,
    break_glass: request.breakGlass,
    // RFC 9396 section 7: the token response names the authorization details it was granted for.
    ...(request.authorizationDetails !== null ? { authorization_details: request.authorizationDetails } : {}),
  };
}

export type IssuedView = ReturnType<typeof issuedView>;

/** CONTRACT section 4, the 202 of `POST /v1/credentials`. */
export function pendingView(request: RequestRecord) {
  return {
    request_id: request.id,
    status: 'pending_approval' as const,
    approvals_required: request.approvalsRequired,
    approvals: [] as never[],
    digest: request.digest,
    expires_at: toIso(request.expiresAt),
    ...(request.authorizationDetails !== null ? { authorization_details: request.authorizationDetails } : {}),
    ...(request.act !== null ? { act: actClaim(request.act) } : {}),
  };
}

export type PendingView = ReturnType<typeof pendingView>;
