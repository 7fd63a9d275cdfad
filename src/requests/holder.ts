import type { Identity, People } from '../identity/index.js';
import type { Holder } from '../store/index.js';

/**
 * Whom a request counts against: the identity, and its person under every key records may hold
 * for them (the running configuration's aliases decide which).
 */
export function holderOf(identity: Identity, people: People): Holder {
  const { personKey, person } = identity;
  return {
    identity: { iss: identity.iss, sub: identity.sub },
    person: personKey === undefined || person === undefined ? null : { key: personKey, same: [...new Set([personKey, ...people.keysOf(person)])] },
  };
}
