import type { Identity } from '../identity/index.js';
import { effectiveStatus, isOwner, issuedView, type IssuedView } from '../requests/index.js';
import { Conflict, PolicyDenied } from '../shared/errors.js';
import type { RequestRecord, RequestState } from '../store/index.js';
import { issuanceOf, issuedEvent, mintFor, notVisible, type CredentialServiceDeps } from './grant.js';

/**
 * The requester collects the token of an approved request, exactly once. Approval does not
 * outlive the configuration it was given under: the token is minted only for scopes the running
 * configuration still grants to this identity, for the audience and no longer than it allows
 * now. A request it no longer grants ends `denied`, with the reason in its event, and the
 * collector is told why (409).
 */
export function createCollecting(deps: CredentialServiceDeps) {
  const { settings, store, clock } = deps;

  return async function collect(identity: Identity, id: string): Promise<IssuedView> {
    const { policy } = settings(identity);
    const now = clock();
    const notCollectable = (status: string) =>
      new Conflict(`The request is ${status}; only an approved request's token can be collected, and only once.`);
    const check = (state: RequestState | undefined): RequestState => {
      if (!state || !isOwner(identity, state.request)) throw notVisible(id);
      const status = effectiveStatus(state.request, now);
      if (status !== 'approved') throw notCollectable(status);
      return state;
    };
    /** What the running policy grants this request now: its lifetime, or why it grants nothing. */
    const regrant = (request: RequestRecord): { ttlSeconds: number } | PolicyDenied => {
      try {
        return policy.decide(identity, request);
      } catch (error) {
        if (error instanceof PolicyDenied) return error;
        throw error;
      }
    };

    const before = check(await store.requests.state(id));
    const granted = regrant(before.request);
    const request = granted instanceof PolicyDenied ? before.request : { ...before.request, ttlSeconds: granted.ttlSeconds };
    const token = granted instanceof PolicyDenied ? undefined : await mintFor(deps, request, before.approvals, now);
    const outcome = await store.change<RequestRecord | Conflict>(id, (current) => {
      const { request: latest, approvals } = check(current);
      if (!token) {
        const refusal = new Conflict(`The request can no longer be collected: the running configuration does not grant it (${(granted as PolicyDenied).detail})`);
        const fields = { decidedAt: now, endedAt: now };
        return {
          transition: { from: ['approved'] as const, to: 'denied' as const, fields },
          events: [{ type: 'request.denied', actor: null, requestId: id, data: { reason: 'policy_changed', detail: refusal.detail } }],
          result: refusal,
        };
      }
      const fields = { issuedAt: token.issuedAt, expiresAt: token.expiresAt };
      const updated: RequestRecord = { ...latest, ttlSeconds: request.ttlSeconds, status: 'issued', ...fields };
      return {
        transition: { from: ['approved'], to: 'issued', fields },
        issuance: issuanceOf(updated, token),
        events: [issuedEvent(updated, token, approvals)],
        result: updated,
      };
    });
    if (outcome instanceof Conflict) throw outcome;
    deps.observer?.tokenIssued({ breakGlass: outcome.breakGlass, approved: true });
    return issuedView(outcome, token as NonNullable<typeof token>);
  };
}
