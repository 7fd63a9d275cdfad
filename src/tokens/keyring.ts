import { unlinkSync } from 'node:fs';
import { join } from 'node:path';
import {
  calculateJwkThumbprint,
  createLocalJWKSet,
  exportJWK,
  generateKeyPair,
  importJWK,
  type CryptoKey,
  type JSONWebKeySet,
  type JWTVerifyGetKey,
} from 'jose';
import type { AuditLog } from '../audit/log.js';
import type { Clock } from '../shared/clock.js';
import { Unavailable } from '../shared/errors.js';
import { ensureKeyDir, publicJwk, readPrivateJwk, writePrivateJwk } from '../shared/key-files.js';
import type { SigningKeyRecord, Store } from '../store/index.js';

/**
 * How long a superseded key keeps signing rights in other processes' eyes: a process that read
 * the old key just before a rotation may still be recording a token signed with it, so the old
 * key is not retired until this has passed, whatever its tokens.
 */
export const RETIRE_GRACE_MS = 60_000;

export interface SigningKey {
  kid: string;
  alg: string;
  privateKey: CryptoKey;
}

export interface Keyring {
  /** The newest unretired key: every broker process on one database signs with the same one. */
  signingKey(): Promise<SigningKey>;
  /** Public halves of every unretired key: what `/.well-known/jwks.json` serves. */
  jwks(): JSONWebKeySet;
  /** A key resolver over `jwks()`, for checking the broker's own tokens. */
  verificationKeys(): JWTVerifyGetKey;
  /** Creates a new signing key when none exists, the newest is `rotateEvery` old, or the algorithm changed. */
  rotateIfDue(): Promise<SigningKeyRecord | undefined>;
  /** Retires superseded keys that no unexpired token uses; returns their kids. */
  retireUnused(): string[];
}

export interface KeyringOptions {
  store: Store;
  audit: AuditLog;
  keyDir: string;
  algorithm: 'ES256' | 'EdDSA' | 'RS256';
  rotateEveryMs: number;
  clock: Clock;
}

export async function openKeyring(options: KeyringOptions): Promise<Keyring> {
  const { store, audit, keyDir, algorithm, rotateEveryMs, clock } = options;
  ensureKeyDir(keyDir);
  const keyFile = (kid: string) => join(keyDir, `${kid}.jwk.json`);
  const privateKeys = new Map<string, CryptoKey>();
  let verification: { version: string; keys: JWTVerifyGetKey } | undefined;

  async function loadPrivateKey(record: SigningKeyRecord): Promise<CryptoKey> {
    let key = privateKeys.get(record.kid);
    if (!key) {
      key = (await importJWK(readPrivateJwk(keyFile(record.kid)), record.alg)) as CryptoKey;
      privateKeys.set(record.kid, key);
    }
    return key;
  }

  const isDue = (newest: SigningKeyRecord | undefined, now: number) =>
    !newest || newest.alg !== algorithm || newest.createdAt + rotateEveryMs <= now;

  const keyring: Keyring = {
    async signingKey() {
      const newest = store.keys.active()[0];
      if (!newest) throw new Unavailable('The broker has no signing key yet.');
      try {
        return { kid: newest.kid, alg: newest.alg, privateKey: await loadPrivateKey(newest) };
      } catch (error) {
        throw new Unavailable('The broker cannot sign right now.', {
          cause: error,
          internal: { kid: newest.kid, keyDir, problem: (error as Error).message },
        });
      }
    },

    jwks() {
      return { keys: store.keys.active().map((key) => ({ ...key.publicJwk, kid: key.kid, alg: key.alg, use: 'sig' })) };
    },

    verificationKeys() {
      const jwks = keyring.jwks();
      const version = jwks.keys.map((key) => key.kid).join(' ');
      if (verification?.version !== version) verification = { version, keys: createLocalJWKSet(jwks) };
      return verification.keys;
    },

    async rotateIfDue() {
      const now = clock();
      if (!isDue(store.keys.active()[0], now)) return undefined;

      // Generate outside the transaction (it is async), then claim the rotation under the write
      // lock: when two processes race, one inserts and the other discards its key.
      const { privateKey } = await generateKeyPair(algorithm, { extractable: true });
      const jwk = await exportJWK(privateKey);
      const kid = await calculateJwkThumbprint(jwk);
      writePrivateJwk(keyFile(kid), { ...jwk, kid, alg: algorithm });
      const record: SigningKeyRecord = { kid, alg: algorithm, publicJwk: publicJwk(jwk), createdAt: now, retiredAt: null };
      const inserted = store.transaction(() => {
        const newest = store.keys.active()[0];
        if (!isDue(newest, now)) return false;
        store.keys.insert(record);
        audit.append({ type: 'key.rotated', data: { kid, alg: algorithm, previous_kid: newest?.kid ?? null } });
        return true;
      });
      if (!inserted) {
        unlinkSync(keyFile(kid));
        return undefined;
      }
      privateKeys.set(kid, privateKey);
      return record;
    },

    retireUnused() {
      const now = clock();
      const active = store.keys.active();
      const retired: string[] = [];
      // active[0] signs; each older key was superseded when the key just newer than it appeared.
      for (let i = 1; i < active.length; i += 1) {
        const key = active[i] as SigningKeyRecord;
        const successor = active[i - 1] as SigningKeyRecord;
        if (successor.createdAt + RETIRE_GRACE_MS > now) continue;
        const done = store.transaction(() => {
          if (store.issuances.anyUnexpiredSignedBy(key.kid, now)) return false;
          if (!store.keys.retire(key.kid, now)) return false;
          audit.append({ type: 'key.retired', data: { kid: key.kid, alg: key.alg } });
          return true;
        });
        if (done) {
          retired.push(key.kid);
          privateKeys.delete(key.kid);
          // Its tokens are all expired: the private half has nothing left to do.
          try {
            unlinkSync(keyFile(key.kid));
          } catch {
            // Another process sharing keyDir removed it first.
          }
        }
      }
      return retired;
    },
  };

  await keyring.rotateIfDue();
  // Fail at start, not at the first request, when the signing key cannot be read.
  await loadPrivateKey(store.keys.active()[0] as SigningKeyRecord);
  return keyring;
}
