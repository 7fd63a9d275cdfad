import { malformedText } from '../shared/well-formed.js';
import { claimPathNames, type ClaimPath } from '../config/index.js';

/** Reading claims by path, and judging their text. */

/** A claim object: not an array, not null. */
const isClaimObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value);

/**
 * The value at a claim path, or `undefined` when it is not there. Each name is one member of a
 * claim object, looked up among own members only (`__proto__` is a claim name like any other,
 * never Object.prototype); an array is never descended into.
 */
export function readClaim(claims: Readonly<Record<string, unknown>>, path: ClaimPath): unknown {
  let value: unknown = claims;
  for (const name of claimPathNames(path)) {
    if (!isClaimObject(value) || !Object.hasOwn(value, name)) return undefined;
    value = value[name];
  }
  return value;
}

/** Sets `value` at `path` in `target`, making the claim objects on the way, nested as in the token. */
export function writeClaim(target: Record<string, unknown>, path: ClaimPath, value: unknown): void {
  const names = claimPathNames(path);
  let at = target;
  names.forEach((name, i) => {
    if (i === names.length - 1) return define(at, name, value);
    if (!Object.hasOwn(at, name) || !isClaimObject(at[name])) define(at, name, {});
    at = at[name] as Record<string, unknown>;
  });
}

/** An own, plain member even for the name `__proto__`, where assignment would set the prototype. */
const define = (target: Record<string, unknown>, name: string, value: unknown) =>
  Object.defineProperty(target, name, { value, enumerable: true, writable: true, configurable: true });

/**
 * Whether every string in a claim set, names and values at any depth, is well-formed Unicode
 * without NUL. A lone surrogate has no one meaning: normalising, comparing and storing it differ
 * by layer, so two such names could compare equal in one place and not in another; a NUL is
 * stored by one engine and not the other, and ends the value for a C-string reader.
 */
export const claimsWellFormed = (claims: unknown): boolean => malformedText(claims) === undefined;
