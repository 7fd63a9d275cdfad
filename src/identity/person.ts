import type { BrokerConfig } from '../config/index.js';
import { normalizeName } from '../shared/names.js';

/**
 * Person keys, CONTRACT section 1 "People". Separation of duties is about people, and one
 * human may hold identities at several issuers; a person key names the human behind an
 * identity so that every *restriction* (who may not approve, what counts as distinct approvers,
 * per-person quotas) can compare people. A person key never grants anything.
 */

/** What a person key is derived from: the fields the verifier sets on an `Identity`. */
export interface PersonSource {
  /** The configured issuer name. */
  idp: string;
  sub: string;
  /** Person issuers with a `usernameClaim`: its raw value. */
  username?: string | undefined;
  /** Workload issuers with an `initiatorClaim`: its raw value. */
  initiator?: string | undefined;
}

/**
 * Gives the person key of an identity, or `undefined` for a workload whose issuer has no
 * `initiatorClaim` (no person is known behind it). Keys of one kind are `u:<name>`: the
 * normalised username (or initiator), mapped through the `people` aliases; keys of a person
 * issuer without `usernameClaim` are `i:<issuer name>:<sub>`, equal to no other. The two kinds
 * never meet, as their prefixes differ.
 */
export type PersonResolver = (identity: PersonSource) => string | undefined;

/** Keys of two kinds: a name (`u:`), or an identity no name is known for (`i:`). */
const nameKey = (name: string) => `u:${name}`;
const identityKey = (idp: string, sub: string) => `i:${idp}:${sub}`;
const aliasKey = (issuer: string, username: string) => `${issuer}\u0000${username}`;

export function createPersonResolver(config: Pick<BrokerConfig, 'identity' | 'people'>): PersonResolver {
  const issuers = new Map(config.identity.issuers.map((issuer) => [issuer.name, issuer]));
  // The configuration refuses one (issuer, username) listed for two people, so this map is a function.
  const aliases = new Map<string, string>();
  for (const person of config.people) {
    const name = normalizeName(person.name);
    for (const alias of person.aliases) aliases.set(aliasKey(alias.issuer, normalizeName(alias.username)), name);
  }
  const byName = (idp: string, value: string) => {
    const name = normalizeName(value);
    // The verifier refuses such a value; a key of nothing would make strangers one person.
    if (name === '') throw new Error(`issuer "${idp}": a username with nothing left after normalisation has no person key`);
    return nameKey(aliases.get(aliasKey(idp, name)) ?? name);
  };

  return (identity) => {
    const issuer = issuers.get(identity.idp);
    // Thrown, never answered with "no person": an unknown issuer must not loosen a restriction.
    if (!issuer) throw new Error(`no identity issuer is named "${identity.idp}"`);
    if (issuer.kind === 'person') {
      if (issuer.usernameClaim === undefined) return identityKey(issuer.name, identity.sub);
      if (identity.username === undefined) throw new Error(`issuer "${issuer.name}" has a usernameClaim, and the identity no username`);
      return byName(issuer.name, identity.username);
    }
    if (issuer.initiatorClaim === undefined) return undefined;
    if (identity.initiator === undefined) throw new Error(`issuer "${issuer.name}" has an initiatorClaim, and the identity no initiator`);
    return byName(issuer.name, identity.initiator);
  };
}
