import type { People } from '../identity/index.js';
import type { ActorRecord, Holder, Principal, RequestRecord, RequestState } from '../store/index.js';

/**
 * Whom a request counts against: an identity, and its person under every key records may hold
 * for them (the running configuration's aliases decide which).
 */
export function holderOf(identity: Principal, personKey: string | null | undefined, people: People): Holder {
  return {
    identity: { iss: identity.iss, sub: identity.sub },
    person: personKey === undefined || personKey === null ? null : { key: personKey, same: [...new Set([personKey, ...people.keysOf(people.personOf(personKey))])] },
  };
}

/** Each actor of a chain as a holder: `limits` count for it, duties follow it. */
export const actorHolders = (actors: readonly ActorRecord[] | null, people: People): Holder[] =>
  (actors ?? []).map((actor) => holderOf(actor, actor.person, people));

/**
 * Everyone who takes part in a request's steps: its principal, each actor and each approver who
 * approved it (CONTRACT section 1, "Duties"), under the running aliases.
 */
export const requestParticipants = (state: Pick<RequestState, 'request' | 'approvals'>, people: People): Holder[] => [
  holderOf(state.request.requester, state.request.person, people),
  ...actorHolders(state.request.act, people),
  ...state.approvals.filter((approval) => approval.decision === 'approve').map((approval) => holderOf(approval.approver, approval.person, people)),
];
