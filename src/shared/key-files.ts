import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import type { JWK } from 'jose';

/**
 * Private keys live in files readable by the broker's user alone. A key file that others can
 * read is refused rather than used, as ssh does: a leaked signing key forges every credential.
 */
export function ensureKeyDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
}

export function readPrivateFile(path: string): string {
  const mode = statSync(path).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new Error(`${path} is readable by other users (mode ${mode.toString(8)}); chmod 600 it`);
  }
  return readFileSync(path, 'utf8');
}

export function readPrivateJwk(path: string): JWK {
  return JSON.parse(readPrivateFile(path)) as JWK;
}

/** Writes a new key file, mode 0600; never overwrites one (`wx`), so racing writers cannot clobber a key. */
export function writePrivateJwk(path: string, jwk: JWK): void {
  writeFileSync(path, `${JSON.stringify(jwk)}\n`, { mode: 0o600, flag: 'wx' });
}

/** The public half of a private JWK: drops every private member. */
export function publicJwk(jwk: JWK): JWK {
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, oth: _oth, k: _k, ...rest } = jwk as JWK & Record<string, unknown>;
  return rest as JWK;
}
