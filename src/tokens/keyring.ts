import { createPrivateKey, generateKeyPair, type JsonWebKey, type KeyObject } from 'node:crypto';
import { existsSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { calculateJwkThumbprint, createLocalJWKSet, errors, type JSONWebKeySet, type JWK, type JWTVerifyGetKey } from 'jose';
import type { Clock } from '../shared/clock.js';
import { Unavailable } from '../shared/errors.js';
import { ensureKeyDir, publicJwk, readPrivateJwk, writePrivateJwk } from '../shared/key-files.js';
import type { SigningKeyRecord, Store } from '../store/index.js';

/**
 * A key is used for signing at most this long past its `rotateEvery`: its successor should be
 * signing by then. When rotation keeps failing, signing stops (503) rather than outlive the point
 * after which the key may be retired and vanish from the JWKS.
 */
export const SIGNING_SLACK_MS = 5 * 60_000;
/** And it stays in the JWKS at least this much longer, for tokens signed at its last moment. */
export const RETIRE_GRACE_MS = 60_000;
/** How often an unknown `kid` in a token may make the keyring re-read the store. */
const REFRESH_COOLDOWN_MS = 5_000;
/**
 * The keyring answers from what it last read of the store for at most this long (and at most a
 * quarter of `publishAhead`), whatever `scheduler.interval` is: a key another process published
 * is in this process's JWKS within it, well inside the half of `publishAhead` that remains once a
 * resource server's cache (max-age, half of `publishAhead`) is counted.
 */
export const KEY_VIEW_MAX_AGE_MS = 5_000;

export interface SigningKey {
  kid: string;
  alg: string;
  /** A node:crypto key: tokens are signed synchronously (see signCompactJws). */
  privateKey: KeyObject;
}

/** A new private key of the algorithm, as a JWK (the form its file keeps). */
async function newPrivateJwk(algorithm: 'ES256' | 'EdDSA' | 'RS256'): Promise<JWK> {
  const generate = promisify(generateKeyPair);
  const { privateKey } =
    algorithm === 'ES256'
      ? await generate('ec', { namedCurve: 'P-256' })
      : algorithm === 'EdDSA'
        ? await generate('ed25519')
        : await generate('rsa', { modulusLength: 2048 });
  return privateKey.export({ format: 'jwk' }) as JWK;
}

export interface Keyring {
  /** The newest key this process holds that may sign now. */
  signingKey(): Promise<SigningKey>;
  /** Public halves of every unretired key of every process on this database: what `/.well-known/jwks.json` serves. */
  jwks(): Promise<JSONWebKeySet>;
  /** A key resolver over `jwks()`, for checking the broker's own tokens. */
  verificationKeys(): JWTVerifyGetKey;
  /** Re-reads the keys from the store now (other processes rotate too). */
  refresh(): Promise<void>;
  /** Creates this process's next key when due, published `publishAhead` before it signs. */
  rotateIfDue(): Promise<SigningKeyRecord | undefined>;
  /** Retires keys past their time that no unexpired token uses; returns their kids. */
  retireUnused(): Promise<string[]>;
}

export interface KeyringOptions {
  store: Store;
  keyDir: string;
  algorithm: 'ES256' | 'EdDSA' | 'RS256';
  rotateEveryMs: number;
  publishAheadMs: number;
  /**
   * The longest time between two calls of `rotateIfDue` (`scheduler.interval`): the next key is
   * made at the last call that still comes `publishAhead` before the current key's time is up,
   * rather than at the first call after it, when the current key might stop signing first.
   */
  rotationCheckMs?: number;
  clock: Clock;
}

/** What the keyring last read of the store. */
interface View {
  readAt: number;
  /** Every unretired key, newest first: what the JWKS serves. */
  active: SigningKeyRecord[];
  jwks: JSONWebKeySet;
  resolve: JWTVerifyGetKey;
}

/**
 * The broker's signing keys. Public halves live in the store, so every process on one database
 * (or every replica on PostgreSQL) serves the same JWKS, read again every few seconds whatever
 * `scheduler.interval` is; private halves live in files under `keyDir`, which processes may share
 * or keep each to their own. A process signs with the newest
 * key whose private half it holds, and only once that key has been published for
 * `publishAhead`: a resource server that cached the JWKS a moment before a rotation still knows
 * every key that signs.
 */
export async function openKeyring(options: KeyringOptions): Promise<Keyring> {
  const { store, keyDir, algorithm, rotateEveryMs, publishAheadMs, clock } = options;
  ensureKeyDir(keyDir);
  const keyFile = (kid: string) => join(keyDir, `${kid}.jwk.json`);
  const privateKeys = new Map<string, KeyObject>();
  const lead = Math.min(options.rotationCheckMs ?? 0, rotateEveryMs - publishAheadMs);
  const maxAge = Math.min(KEY_VIEW_MAX_AGE_MS, publishAheadMs / 4);
  let view: View | undefined;
  let reads = 0;
  let shown = 0;
  let reading: Promise<View> | undefined;

  const held = (key: SigningKeyRecord) => privateKeys.has(key.kid) || existsSync(keyFile(key.kid));
  const signsUntil = (key: SigningKeyRecord) => key.activatesAt + rotateEveryMs + SIGNING_SLACK_MS;

  async function loadPrivateKey(record: SigningKeyRecord): Promise<KeyObject> {
    let key = privateKeys.get(record.kid);
    if (!key) {
      key = createPrivateKey({ key: readPrivateJwk(keyFile(record.kid)) as JsonWebKey, format: 'jwk' });
      privateKeys.set(record.kid, key);
    }
    return key;
  }

  /** This process's next key is due when it has none of the configured algorithm that is still young enough. */
  const isDue = (keys: readonly SigningKeyRecord[], now: number) => {
    const newest = keys.find((key) => key.alg === algorithm && held(key));
    return !newest || newest.activatesAt + rotateEveryMs - publishAheadMs - lead <= now;
  };

  async function read(): Promise<View> {
    const seq = (reads += 1);
    const readAt = clock();
    const active = await store.keys.active();
    const jwks = { keys: active.map((key) => ({ ...key.publicJwk, kid: key.kid, alg: key.alg, use: 'sig' })) };
    const next = { readAt, active, jwks, resolve: createLocalJWKSet(jwks) };
    // Reads may finish out of order: an older one never replaces a newer.
    if (seq > shown) {
      shown = seq;
      view = next;
    }
    return next;
  }

  /** The last read, or a new one when it is older than `maxAge`; readers at one moment share one read. */
  async function fresh(): Promise<View> {
    if (view && Math.abs(clock() - view.readAt) < maxAge) return view;
    reading ??= read().finally(() => {
      reading = undefined;
    });
    return reading;
  }
  const current = () => view as View;

  const verify: JWTVerifyGetKey = async (header, token) => {
    const known = await fresh();
    try {
      return await known.resolve(header, token);
    } catch (error) {
      // A key another process published since the last read: read the store again, once in a while.
      if (!(error instanceof errors.JWKSNoMatchingKey) || clock() - current().readAt < REFRESH_COOLDOWN_MS) throw error;
      return (await read()).resolve(header, token);
    }
  };

  const keyring: Keyring = {
    async signingKey() {
      const { active } = await fresh();
      const now = clock();
      const usable = active.find((key) => key.activatesAt <= now && now < signsUntil(key) && held(key));
      if (!usable) throw new Unavailable('The broker has no signing key it may use yet.', { internal: { keyDir } });
      try {
        return { kid: usable.kid, alg: usable.alg, privateKey: await loadPrivateKey(usable) };
      } catch (error) {
        throw new Unavailable('The broker cannot sign right now.', {
          cause: error,
          internal: { kid: usable.kid, keyDir, problem: (error as Error).message },
        });
      }
    },

    async jwks() {
      return (await fresh()).jwks;
    },

    verificationKeys: () => verify,

    async refresh() {
      await read();
    },

    async rotateIfDue() {
      const now = clock();
      const { active } = current();
      if (!isDue(active, now)) return undefined;

      // Generate outside the store operation (it is async), then claim the rotation under the
      // store's lock: when two processes sharing keyDir race, one inserts and the other discards.
      const jwk = await newPrivateJwk(algorithm);
      const kid = await calculateJwkThumbprint(publicJwk(jwk));
      writePrivateJwk(keyFile(kid), { ...jwk, kid, alg: algorithm });
      let record: SigningKeyRecord | undefined;
      const inserted = await store.keys.add(
        (keys) => {
          if (!isDue(keys.filter((key) => key.kid !== kid), now)) return false;
          const mine = keys.find((key) => key.alg === algorithm && held(key) && key.kid !== kid);
          // Nobody can have cached a JWKS of a store with no keys: the first key signs at once.
          const activatesAt = keys.length === 0 ? now : Math.max(now + publishAheadMs, mine ? mine.activatesAt + rotateEveryMs : 0);
          record = { kid, alg: algorithm, publicJwk: publicJwk(jwk), createdAt: now, activatesAt, retiredAt: null, sealedPrivateKey: null };
          return record;
        },
        (key) => ({
          type: 'key.rotated',
          data: { kid, alg: algorithm, activates_at: new Date(key.activatesAt).toISOString(), previous_kid: active.find(held)?.kid ?? null },
        }),
      );
      if (!inserted) {
        unlinkSync(keyFile(kid));
        await read();
        return undefined;
      }
      await read();
      return record;
    },

    async retireUnused() {
      const now = clock();
      const retired: string[] = [];
      // The newest key always stays, so the JWKS is never empty.
      for (const key of current().active.slice(1)) {
        if (signsUntil(key) + RETIRE_GRACE_MS > now) continue;
        const done = await store.keys.retire(key.kid, now, { type: 'key.retired', data: { kid: key.kid, alg: key.alg } });
        if (!done) continue;
        retired.push(key.kid);
        privateKeys.delete(key.kid);
        // Its tokens are all expired: the private half has nothing left to do.
        try {
          unlinkSync(keyFile(key.kid));
        } catch {
          // Another process sharing keyDir removed it first, or it was never ours.
        }
      }
      if (retired.length > 0) await read();
      return retired;
    },
  };

  await read();
  await keyring.rotateIfDue();
  // Fail at start, not at the first request, when the signing key cannot be read.
  const first = current().active.find((key) => key.activatesAt <= clock() && held(key));
  if (first) await loadPrivateKey(first);
  return keyring;
}
