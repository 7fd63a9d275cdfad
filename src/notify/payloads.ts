import type { WebhookEvent } from '../config/index.js';
import { consoleRequestUrl } from '../console/links.js';
import { actClaim } from '../delegation/index.js';
import { toIso } from '../shared/clock.js';
import type { RequestRecord } from '../store/index.js';

/** A signed head of the audit chain (`audit.checkpoint`). */
export interface CheckpointNotice {
  seq: number;
  hash: string;
  /** The JWS: anyone can verify it against the broker's JWKS. */
  checkpoint: string;
}

/**
 * CONTRACT section 2: the webhook body, plus `ttl_seconds` (how long the token would live).
 * `url` is where a person sees and decides the request: given when the console is configured.
 * Never a token.
 */
export function webhookPayload(event: WebhookEvent, request: RequestRecord, at: number, consoleBase?: string) {
  return {
    event,
    at: toIso(at),
    request_id: request.id,
    requester: { iss: request.requester.iss, sub: request.requester.sub },
    ...(request.initiator !== null ? { initiator: request.initiator } : {}),
    ...(request.boundClaims !== null ? { bound_claims: request.boundClaims } : {}),
    task_id: request.taskId,
    scopes: request.scopes,
    audience: request.audience,
    ttl_seconds: request.ttlSeconds,
    break_glass: request.breakGlass,
    justification: request.justification,
    ...(request.authorizationDetails !== null ? { authorization_details: request.authorizationDetails } : {}),
    ...(request.act !== null ? { act: actClaim(request.act) } : {}),
    digest: request.digest,
    approvals_required: request.approvalsRequired,
    expires_at: toIso(request.expiresAt),
    ...(consoleBase !== undefined ? { url: consoleRequestUrl(consoleBase, request.id) } : {}),
  };
}

export type WebhookPayload = ReturnType<typeof webhookPayload>;

/** The webhook body of an `audit.checkpoint`: the head and its JWS. Public values, no secret. */
export function checkpointPayload(notice: CheckpointNotice, at: number) {
  return { event: 'audit.checkpoint' as const, at: toIso(at), seq: notice.seq, hash: notice.hash, checkpoint: notice.checkpoint };
}
