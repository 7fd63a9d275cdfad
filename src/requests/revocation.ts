import { isLive, type Principal, type RequestChange, type RequestState, type TransitionFields } from '../store/index.js';
import { effectiveStatus } from './view.js';

/**
 * What revoking a grant writes besides its own transition: its live descendants revoked with it,
 * each with its `token.revoked` event naming the parent, and the grant's own event naming them
 * (CONTRACT section 5). `state` was read with its descendants. A descendant already past its
 * expiry is not revoked: it expired, and the scheduler records that (`grant.expired`), as it would
 * have had it swept first.
 */
export function revokeWithLine(
  state: RequestState,
  identity: Principal,
  reason: string,
  fields: TransitionFields & { endedAt: number },
): Pick<RequestChange<unknown>, 'events' | 'cascade'> {
  const { request, issuance } = state;
  const line = (state.descendants ?? []).filter(({ request: child }) => isLive(effectiveStatus(child, fields.endedAt)));
  const children = line.map(({ request: child, jti }) => ({ request_id: child.id, ...(jti !== null ? { jti } : {}) }));
  return {
    events: [
      {
        type: issuance ? 'token.revoked' : 'request.revoked',
        actor: identity,
        requestId: request.id,
        data: { reason, previous_status: request.status, ...(issuance ? { jti: issuance.jti } : {}), ...(children.length > 0 ? { children } : {}) },
      },
      ...line.map(({ request: child, jti }) => ({
        type: jti !== null ? ('token.revoked' as const) : ('request.revoked' as const),
        actor: identity,
        requestId: child.id,
        data: { reason, previous_status: child.status, ...(jti !== null ? { jti } : {}), revoked_with: request.id },
      })),
    ],
    ...(line.length > 0 ? { cascade: { ids: line.map(({ request: child }) => child.id), fields } } : {}),
  };
}
