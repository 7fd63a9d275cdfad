import type { ClaimPattern, MatchConfig } from '../config/index.js';

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

/** A compiled `claims` value: tests one claim's value. */
type ClaimTest = (value: unknown) => boolean;

const isScalar = (value: unknown): value is string | number | boolean =>
  typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean';

/** A claim object: not an array, not null. */
const isClaimObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/** The JSON text of a number or boolean; a string is itself. */
const textOf = (value: string | number | boolean): string => (typeof value === 'string' ? value : JSON.stringify(value));

/**
 * Claims compare as text: a number or boolean as its JSON text. An array claim matches when any
 * of its string, number or boolean elements does; an object, or an array inside the array,
 * never matches a string.
 */
function compileText(pattern: string): ClaimTest {
  const glob = compileGlob(pattern);
  const scalar = (value: unknown) => isScalar(value) && glob(textOf(value));
  return (value) => (Array.isArray(value) ? value.some(scalar) : scalar(value));
}

/**
 * A map matches the claim object of that name member by member, at any depth. Each key is one
 * claim name, never a path: `{kubernetes.io: {namespace: prod}}` needs a claim `kubernetes.io`
 * holding an object, and a top-level claim named `kubernetes.io.namespace` is another claim.
 */
function compileMembers(patterns: { readonly [name: string]: ClaimPattern }): (claims: Readonly<Record<string, unknown>>) => boolean {
  const members = Object.entries(patterns).map(([name, pattern]) => [name, compileClaim(pattern)] as const);
  // Own members only: a claim named `constructor` or `__proto__` is looked up in the token, not in Object.prototype.
  return (claims) => members.every(([name, test]) => Object.hasOwn(claims, name) && test(claims[name]));
}

function compileClaim(pattern: ClaimPattern): ClaimTest {
  if (typeof pattern === 'string') return compileText(pattern);
  const members = compileMembers(pattern);
  // A map never matches a string, a number, or an array (even an array of objects).
  return (value) => isClaimObject(value) && members(value);
}

export function compileMatch(match: MatchConfig): IdentityMatcher {
  const subject = match.subject === undefined ? undefined : compileGlob(match.subject);
  const claims = compileMembers(match.claims ?? {});
  return (identity) => identity.idp === match.issuer && (subject === undefined || subject(identity.sub)) && claims(identity.claims);
}
