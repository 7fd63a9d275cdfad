import type { MatchConfig } from '../config/index.js';

/** What a `match` rule looks at: the issuer's configured name, `sub`, and the token's claims. */
export interface Matchable {
  idp: string;
  sub: string;
  claims: Readonly<Record<string, unknown>>;
}

/** A compiled `match`: globs turned into anchored expressions once, at load. */
export type IdentityMatcher = (identity: Matchable) => boolean;

/** `*` matches any run of characters, everything else is literal; anchored at both ends. */
export function compileGlob(pattern: string): (value: string) => boolean {
  if (!pattern.includes('*')) return (value) => value === pattern;
  const source = pattern
    .split('*')
    .map((part) => part.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&'))
    .join('[\\s\\S]*');
  const regex = new RegExp(`^${source}$`);
  return (value) => regex.test(value);
}

/** Claims compare as strings; an array claim matches when any element does; objects never match. */
function claimMatches(value: unknown, test: (v: string) => boolean): boolean {
  if (Array.isArray(value)) return value.some((item) => claimMatches(item, test));
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') return test(String(value));
  return false;
}

export function compileMatch(match: MatchConfig): IdentityMatcher {
  const subject = match.subject === undefined ? undefined : compileGlob(match.subject);
  const claims = Object.entries(match.claims ?? {}).map(([name, pattern]) => [name, compileGlob(pattern)] as const);
  return (identity) =>
    identity.idp === match.issuer &&
    (subject === undefined || subject(identity.sub)) &&
    claims.every(([name, test]) => Object.hasOwn(identity.claims, name) && claimMatches(identity.claims[name], test));
}
