import { canonicalJson, sha256Hex } from '../shared/canonical-json.js';
import type { AuthorizationDetail } from '../shared/authorization-details.js';
import type { Principal } from '../store/index.js';

export interface DigestInput {
  requestId: string;
  requester: Principal;
  /** Who started the requesting job, and which job it is: part of what is approved. */
  initiator?: string | null | undefined;
  boundClaims?: Record<string, unknown> | null | undefined;
  taskId: string;
  scopes: readonly string[];
  audience: string;
  ttlSeconds: number;
  justification: string | null;
  breakGlass: boolean;
  /** The objects it acts on: what an approver approves is this task on these objects. */
  authorizationDetails?: readonly AuthorizationDetail[] | null | undefined;
  /** Delegated: who acts for the requester (the `act` chain), also part of what is approved. */
  act?: object | undefined;
}

/**
 * What an approver signs off on: SHA-256 over the canonical JSON of everything that makes the
 * request what it is. An approver echoes it back, so a decision made on a stale or different
 * view of the request does not count.
 */
export function requestDigest(input: DigestInput): string {
  return sha256Hex(
    canonicalJson({
      request_id: input.requestId,
      requester: { iss: input.requester.iss, sub: input.requester.sub },
      ...(input.initiator ? { initiator: input.initiator } : {}),
      ...(input.boundClaims ? { bound_claims: input.boundClaims } : {}),
      task_id: input.taskId,
      scopes: input.scopes,
      audience: input.audience,
      ttl_seconds: input.ttlSeconds,
      justification: input.justification,
      break_glass: input.breakGlass,
      ...(input.authorizationDetails ? { authorization_details: input.authorizationDetails } : {}),
      ...(input.act ? { act: input.act } : {}),
    }),
  );
}
