import { createPrivateKey, createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import { existsSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { JWK } from 'jose';
import { StartRefused } from '../shared/errors.js';
import { ensureKeyDir, readPrivateJwk, samePublicKey, writePrivateJwk } from '../shared/key-files.js';
import type { SigningKeyRecord } from '../store/index.js';
import type { KeyCustody } from './key-custody.js';
import { openSealedKey, sealPrivateJwk } from './key-encryption.js';

/** The private halves of the signing keys, wherever the custody keeps them (see key-custody.ts). */
export interface PrivateHalves {
  /**
   * Whether this process may sign with the key. In the store: its sealed half opens under the
   * key-encryption keys and is the private half of the key published. In files: its file is here.
   */
  holds(key: SigningKeyRecord): boolean;
  /**
   * Whether the key belongs in the JWKS. In the store, only a key whose sealed half opens: the
   * key-encryption key vouches for it, so a row written by someone without it publishes nothing.
   * In files, every unretired key (the others' files are on their own machines).
   */
  vouches(key: SigningKeyRecord): boolean;
  /** The key as node:crypto signs with it; throws when it cannot be read. */
  load(key: SigningKeyRecord): KeyObject;
  /** Keeps a new key's private half before it is offered to the store: the row's sealed half, or null once its file is written. */
  keep(kid: string, alg: string, jwk: JWK): string | null;
  /** A new key the store declined (another process rotated first). */
  discard(kid: string): void;
  /** A retired key: its tokens have expired, so its private half has nothing left to sign. */
  forget(kid: string): void;
  /** Why the key's sealed half does not open, when it does not. */
  failure(key: SigningKeyRecord): StartRefused | undefined;
}

/**
 * The kids the broker makes: RFC 7638 SHA-256 thumbprints, base64url. A kid is read back from the
 * store, which whoever writes the database controls, and only a kid of this shape names a key
 * file: `../elsewhere/key` would reach a file outside keyDir, to be read, sealed into the store and
 * published as the cluster's key, or removed when its row is retired.
 */
const FILE_KID = /^[A-Za-z0-9_-]{43}$/;

/** The key file of `kid` under `keyDir`; undefined for a kid the broker never made, which names no file. */
export const keyFile = (keyDir: string, kid: string): string | undefined => (FILE_KID.test(kid) ? join(keyDir, `${kid}.jwk.json`) : undefined);

function removeKeyFile(keyDir: string, kid: string): void {
  const file = keyFile(keyDir, kid);
  if (file === undefined) return;
  try {
    unlinkSync(file);
  } catch {
    // Another process sharing keyDir removed it first, or there never was one here.
  }
}

export function privateHalves(custody: KeyCustody): PrivateHalves {
  return custody.kind === 'store' ? sealedInStore(custody) : inFiles(custody.keyDir);
}

function inFiles(keyDir: string): PrivateHalves {
  ensureKeyDir(keyDir);
  const loaded = new Map<string, KeyObject>();
  const holds = (key: SigningKeyRecord) => {
    const file = keyFile(keyDir, key.kid);
    return loaded.has(key.kid) || (file !== undefined && existsSync(file));
  };
  return {
    holds,
    vouches: () => true,
    load(key) {
      let privateKey = loaded.get(key.kid);
      if (!privateKey) {
        const file = keyFile(keyDir, key.kid);
        if (file === undefined) throw new StartRefused('key_file_unusable', `signing key ${key.kid} has no key file: its kid is not one the broker makes`);
        try {
          privateKey = createPrivateKey({ key: readPrivateJwk(file) as JsonWebKey, format: 'jwk' });
        } catch (error) {
          throw new StartRefused('key_file_unusable', `the key file of signing key ${key.kid} cannot be used: ${(error as Error).message}`);
        }
        // A file swapped for another key would sign tokens no JWKS vouches for: refused, as a sealed half is.
        if (!samePublicKey(createPublicKey(privateKey).export({ format: 'jwk' }) as JWK, key.publicJwk)) {
          throw new StartRefused('key_file_unusable', `the key file of signing key ${key.kid} holds another key than the one published`);
        }
        loaded.set(key.kid, privateKey);
      }
      return privateKey;
    },
    keep(kid, _alg, jwk) {
      const file = keyFile(keyDir, kid);
      if (file === undefined) throw new Error(`signing key ${kid} has a kid the broker does not make`);
      writePrivateJwk(file, jwk);
      return null;
    },
    discard: (kid) => removeKeyFile(keyDir, kid),
    forget(kid) {
      loaded.delete(kid);
      removeKeyFile(keyDir, kid);
    },
    failure: () => undefined,
  };
}

function sealedInStore(custody: Extract<KeyCustody, { kind: 'store' }>): PrivateHalves {
  // Each key opened once per content of its row: a row changed behind the broker's back (its
  // public half, algorithm or sealed half) is judged again, never answered from this cache.
  const opened = new Map<string, { row: string; privateKey?: KeyObject; failure?: StartRefused }>();
  // Made once per record: a key is looked at on every issuance, and a store read brings new records.
  const rows = new WeakMap<SigningKeyRecord, string>();
  const rowOf = (key: SigningKeyRecord) => {
    let row = rows.get(key);
    if (row === undefined) {
      row = JSON.stringify([key.alg, key.sealedPrivateKey, key.publicJwk]);
      rows.set(key, row);
    }
    return row;
  };
  const open = (key: SigningKeyRecord) => {
    if (key.sealedPrivateKey === null) return undefined;
    const row = rowOf(key);
    let entry = opened.get(key.kid);
    if (entry?.row !== row) {
      try {
        entry = { row, privateKey: openSealedKey(custody.keys, key.sealedPrivateKey, key) };
      } catch (error) {
        if (!(error instanceof StartRefused)) throw error;
        entry = { row, failure: error };
      }
      opened.set(key.kid, entry);
    }
    return entry;
  };
  const holds = (key: SigningKeyRecord) => open(key)?.privateKey !== undefined;
  return {
    holds,
    vouches: holds,
    load(key) {
      const entry = open(key);
      if (!entry?.privateKey) throw entry?.failure ?? new Error(`signing key ${key.kid} has no sealed private half`);
      return entry.privateKey;
    },
    keep: (kid, alg, jwk) => sealPrivateJwk(custody.keys, jwk, { kid, alg }),
    discard: () => {},
    forget(kid) {
      opened.delete(kid);
      // The file of a key sealed into the store at an upgrade goes too.
      removeKeyFile(custody.keyDir, kid);
    },
    failure: (key) => open(key)?.failure,
  };
}
