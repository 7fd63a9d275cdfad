import { usage } from './errors.js';

/**
 * `--claim name=value` flags as claims: a value starting with `[` or `{` is read as JSON
 * (`groups=["a","b"]`), anything else is the text itself.
 */
export function parseClaims(pairs: readonly string[], flag = '--claim'): Record<string, unknown> {
  const claims: Record<string, unknown> = {};
  for (const pair of pairs) {
    const at = pair.indexOf('=');
    if (at < 1) throw usage(`${flag} ${pair}: expected name=value`);
    const value = pair.slice(at + 1);
    try {
      claims[pair.slice(0, at)] = /^[[{]/.test(value) ? JSON.parse(value) : value;
    } catch {
      throw usage(`${flag} ${pair}: the value is not valid JSON`);
    }
  }
  return claims;
}
