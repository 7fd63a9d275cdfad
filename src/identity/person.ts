import type { BrokerConfig } from '../config/index.js';
import { normalizeName } from '../shared/names.js';

/**
 * Person keys, CONTRACT section 1 "People". Separation of duties is about people, and one
 * human may hold identities at several issuers; a person key names the human behind an
 * identity so that every *restriction* (who may not approve, what counts as distinct approvers,
 * per-person quotas) can compare people. A person key never grants anything.
 *
 * Records keep the name as the token gave it (normalised, with its issuer); which person that
 * name is comes from the `people` aliases of the configuration running when it is compared. So
 * an alias added by a reload reaches requests and grants made before it: a record never freezes
 * who someone was.
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

export interface People {
  /**
   * The key records keep for an identity's person: `n:<issuer>:<normalised name>` for a
   * username or job initiator, `i:<issuer>:<sub>` for a person issuer without `usernameClaim`
   * (equal to no other); undefined for a workload whose issuer has no `initiatorClaim`.
   */
  keyOf(source: PersonSource): string | undefined;
  /**
   * The person a recorded key is under this configuration: `u:<name>` (the alias's person, or
   * the name itself), or the `i:` key as it is. Keys of releases before recorded keys were
   * kept raw (`u:<name>`) are people already.
   */
  personOf(key: string): string;
  /** Every recorded key that is `person` under this configuration (its names at each issuer, its aliases). */
  keysOf(person: string): string[];
}

const aliasKey = (issuer: string, username: string) => `${issuer}\u0000${username}`;

export function createPeople(config: Pick<BrokerConfig, 'identity' | 'people'>): People {
  const issuers = new Map(config.identity.issuers.map((issuer) => [issuer.name, issuer]));
  /** Issuers whose identities carry a name: where one person's name may be recorded. */
  const naming = config.identity.issuers
    .filter((issuer) => (issuer.kind === 'person' ? issuer.usernameClaim : issuer.initiatorClaim) !== undefined)
    .map((issuer) => issuer.name);
  // The configuration refuses one (issuer, username) listed for two people, so this map is a function.
  const aliases = new Map<string, string>();
  const aliasesOf = new Map<string, string[]>();
  for (const person of config.people) {
    const name = normalizeName(person.name);
    for (const alias of person.aliases) {
      const username = normalizeName(alias.username);
      aliases.set(aliasKey(alias.issuer, username), name);
      aliasesOf.set(name, [...(aliasesOf.get(name) ?? []), `n:${alias.issuer}:${username}`]);
    }
  }

  const nameKey = (idp: string, value: string) => {
    const name = normalizeName(value);
    // The verifier refuses such a value; a key of nothing would make strangers one person.
    if (name === '') throw new Error(`issuer "${idp}": a username with nothing left after normalisation has no person key`);
    return `n:${idp}:${name}`;
  };

  return {
    keyOf(identity) {
      const issuer = issuers.get(identity.idp);
      // Thrown, never answered with "no person": an unknown issuer must not loosen a restriction.
      if (!issuer) throw new Error(`no identity issuer is named "${identity.idp}"`);
      if (issuer.kind === 'person') {
        if (issuer.usernameClaim === undefined) return `i:${issuer.name}:${identity.sub}`;
        if (identity.username === undefined) throw new Error(`issuer "${issuer.name}" has a usernameClaim, and the identity no username`);
        return nameKey(issuer.name, identity.username);
      }
      if (issuer.initiatorClaim === undefined) return undefined;
      if (identity.initiator === undefined) throw new Error(`issuer "${issuer.name}" has an initiatorClaim, and the identity no initiator`);
      return nameKey(issuer.name, identity.initiator);
    },

    personOf(key) {
      if (!key.startsWith('n:')) return key;
      // Issuer names hold no colon: the first one after the prefix ends it.
      const split = key.indexOf(':', 2);
      const issuer = key.slice(2, split);
      const name = key.slice(split + 1);
      return `u:${aliases.get(aliasKey(issuer, name)) ?? name}`;
    },

    keysOf(person) {
      if (!person.startsWith('u:')) return [person];
      const name = person.slice(2);
      // The name at every issuer where it is not someone else's alias, the person's aliases, and
      // the key releases before this one recorded.
      const own = naming.filter((issuer) => (aliases.get(aliasKey(issuer, name)) ?? name) === name).map((issuer) => `n:${issuer}:${name}`);
      return [...new Set([...own, ...(aliasesOf.get(name) ?? []), person])];
    },
  };
}

/** The person an identity is, under this configuration (`People.personOf` of its key). */
export type PersonResolver = (identity: PersonSource) => string | undefined;

export function createPersonResolver(config: Pick<BrokerConfig, 'identity' | 'people'>): PersonResolver {
  const people = createPeople(config);
  return (identity) => {
    const key = people.keyOf(identity);
    return key === undefined ? undefined : people.personOf(key);
  };
}
