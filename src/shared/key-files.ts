import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
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

/**
 * Writes a new key file, mode 0600, whole or not at all, and never over another: the key goes to
 * a file of its own, synced, then is linked in under its name (EEXIST when one is there, so
 * racing writers cannot clobber a key), and the directory synced. A power cut then leaves the old
 * state or the new, never an empty key file the broker cannot start with (its record in the
 * store is durable already).
 */
export function writePrivateJwk(path: string, jwk: JWK): void {
  const staged = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const fd = openSync(staged, 'wx', 0o600);
  try {
    writeSync(fd, `${JSON.stringify(jwk)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(staged, path);
  } finally {
    unlinkSync(staged);
  }
  const dir = openSync(dirname(path), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

/** The public half of a private JWK: drops every private member. */
export function publicJwk(jwk: JWK): JWK {
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, oth: _oth, k: _k, ...rest } = jwk as JWK & Record<string, unknown>;
  return rest as JWK;
}
