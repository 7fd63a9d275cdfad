import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import type { JWK } from 'jose';
import { StartRefused } from './errors.js';

/**
 * Private keys live in files readable by the broker's user alone. A key file that others can
 * read, or that another user owns, is refused rather than used, as ssh does: a leaked signing key
 * forges every credential, and one planted by another user signs for them. A key directory that
 * anyone may write to is refused too: anyone could swap the keys in it.
 */
export function ensureKeyDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const stats = statSync(dir);
  if (!stats.isDirectory()) throw new StartRefused('key_dir_unsafe', `${dir} (signing.keyDir) is not a directory`);
  if ((stats.mode & 0o002) !== 0) {
    throw new StartRefused('key_dir_unsafe', `${dir} (signing.keyDir) is writable by every user (mode ${(stats.mode & 0o777).toString(8)}): anyone could swap its keys; chmod 700 it`);
  }
}

export function readPrivateFile(path: string): string {
  const stats = statSync(path);
  const mode = stats.mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new Error(`${path} is readable by other users (mode ${mode.toString(8)}); chmod 600 it`);
  }
  // Only root reads a file mode 0600 that another user owns: a broker running as root takes its own, or root's.
  const uid = process.getuid?.();
  if (uid !== undefined && stats.uid !== uid && stats.uid !== 0) {
    throw new Error(`${path} is owned by another user (uid ${stats.uid}); chown it to the broker's user`);
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

/** The members that make a public key what it is (RFC 7638's, for the EC, OKP and RSA keys the broker uses). */
const KEY_MEMBERS = ['kty', 'crv', 'x', 'y', 'n', 'e'] as const;

/** Whether two JWKs are one public key, member by member. */
export const samePublicKey = (a: JWK, b: JWK): boolean => KEY_MEMBERS.every((member) => a[member] === b[member]);

/** A public JWK's members that make the key, and no others (no x5c, x5u, key_ops...). */
export function keyMembers(jwk: JWK): JWK {
  const members: JWK = {};
  for (const name of KEY_MEMBERS) if (jwk[name] !== undefined) members[name] = jwk[name];
  return members;
}

/** The public half of a private JWK: drops every private member. */
export function publicJwk(jwk: JWK): JWK {
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, oth: _oth, k: _k, ...rest } = jwk as JWK & Record<string, unknown>;
  return rest as JWK;
}
