import type { People } from '../identity/index.js';
import type { ActorRecord, Holder, Principal, RequestRecord } from '../store/index.js';

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

/** Everyone who takes part in a request's steps: its principal and each actor, under the running aliases. */
export const requestParticipants = (request: Pick<RequestRecord, 'requester' | 'person' | 'act'>, people: People): Holder[] => [
  holderOf(request.requester, request.person, people),
  ...actorHolders(request.act, people),
];
