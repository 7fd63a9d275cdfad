import type { MatchConfig } from '../config/index.js';

/** What a `match` rule looks at: the issuer's configured name, `sub`, and the token's claims. */
export interface Matchable {
  idp: string;
  sub: string;
  claims: Readonly<Record<string, unknown>>;
}

/** A compiled `match`: globs split into their literal parts once, at load. */
export type IdentityMatcher = (identity: Matchable) => boolean;

/**
 * `*` matches any run of characters, everything else is literal; anchored at both ends.
 *
 * No RegExp: on a hostile claim a backtracking engine takes time that grows as the claim's
 * length to the power of the number of `*` (`*-*-*-prod` against 5,000 dashes: seconds). Here the first and last parts are anchored
 * and the middle parts are found left to right, each at its leftmost place after the one before.
 * Leftmost is always right for `*`-only globs (taking a part further right only leaves less
 * room for the rest), so there is no backtracking and the time is linear in the value's length.
 */
export function compileGlob(pattern: string): (value: string) => boolean {
  if (!pattern.includes('*')) return (value) => value === pattern;
  const parts = pattern.split('*');
  const first = parts[0] as string;
  const last = parts[parts.length - 1] as string;
  const middle = parts.slice(1, -1).filter((part) => part !== '');
  const fixed = first.length + last.length;
  return (value) => {
    if (value.length < fixed || !value.startsWith(first) || !value.endsWith(last)) return false;
    const end = value.length - last.length;
    let at = first.length;
    for (const part of middle) {
      const found = value.indexOf(part, at);
      if (found < 0 || found + part.length > end) return false;
      at = found + part.length;
    }
    return true;
  };
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
