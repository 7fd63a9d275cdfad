import type { Identity } from '../identity/index.js';
import { effectiveStatus, isOwner, maySee, requestView, revokeWithLine, type RequestView } from '../requests/index.js';
import { Conflict, PolicyDenied } from '../shared/errors.js';
import { isLive } from '../store/index.js';
import { notVisible, type CredentialServiceDeps } from './grant.js';

/**
 * Ends a live grant (complete, revoke): the request is revoked and, if a token was minted, so is
 * the token, with the whole line of its child tokens, in the same transaction.
 */
export function createEnding(deps: Pick<CredentialServiceDeps, 'settings' | 'store' | 'clock'>) {
  const { settings, store, clock } = deps;

  return async function end(identity: Identity, id: string, reason: string): Promise<RequestView> {
    const { policy } = settings(identity);
    const now = clock();
    const after = await store.change(id, (state) => {
      if (!state || !maySee(policy, identity, state.request)) throw notVisible(id);
      const { request, issuance } = state;
      if (!isOwner(identity, request) && !identity.roles.has('admin')) {
        throw PolicyDenied.action('Only the requester or an admin may end this request.');
      }
      const status = effectiveStatus(request, now);
      if (!isLive(status)) throw new Conflict(`The request is already ${status}.`);
      const fields = { endedAt: now, revokeReason: reason, revokedBy: { iss: identity.iss, sub: identity.sub } };
      return {
        ...revokeWithLine(state, identity, reason, fields),
        transition: { from: [request.status], to: 'revoked', fields },
        result: { ...state, request: { ...request, status: 'revoked' as const, ...fields } },
      };
    }, { descendants: true });
    return requestView(after, now);
  };
}
