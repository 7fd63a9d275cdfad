import { generateKeyPair, type KeyObject } from 'node:crypto';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import { calculateJwkThumbprint, createLocalJWKSet, errors, type JSONWebKeySet, type JWK, type JWTVerifyGetKey } from 'jose';
import type { Logger } from 'pino';
import { toIso, type Clock } from '../shared/clock.js';
import { Unavailable } from '../shared/errors.js';
import { keyMembers, publicJwk, readPrivateJwk } from '../shared/key-files.js';
import type { SigningKeyRecord, Store } from '../store/index.js';
import type { KeyCustody } from './key-custody.js';
import { openSealedKey, sealedUnder, sealPrivateJwk } from './key-encryption.js';
import { keyFile, privateHalves } from './private-halves.js';

/**
 * A key is used for signing at most this long past its `rotateEvery`: its successor should be
 * signing by then. When rotation keeps failing, signing stops (503) rather than outlive the point
 * after which the key may be retired and vanish from the JWKS.
 */
export const SIGNING_SLACK_MS = 5 * 60_000;
/**
 * And it stays in the JWKS at least this much longer, for tokens signed at its last moment, and
 * this long after its last token expires: a replica whose clock runs up to a minute ahead of the
 * others (or a resource server's leeway) never sees a live token's key retired.
 */
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

/** A new private key of the algorithm, as a JWK. */
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

export interface PublishedKeys {
  jwks: JSONWebKeySet;
  maxAgeSeconds: number;
}

export interface Keyring {
  /** The newest key that may sign now: the cluster's (keys in the store) or this process's own (key files). */
  signingKey(): Promise<SigningKey>;
  /**
   * Throws when an unretired key of the store does not open here (a key-encryption key missing
   * from this replica, a row changed behind the broker's back): this replica would serve a JWKS
   * without it and refuse its tokens, so it is not ready. At start the same refuses to start.
   */
  checkKeysOpen(): Promise<void>;
  /**
   * Public halves of every unretired key of every process on this database (what
   * `/.well-known/jwks.json` serves), and how many seconds a resource server may cache them.
   */
  jwks(): Promise<PublishedKeys>;
  /** A key resolver over `jwks()`, for checking the broker's own tokens. */
  verificationKeys(): JWTVerifyGetKey;
  /** Re-reads the keys from the store now (other processes rotate too). */
  refresh(): Promise<void>;
  /** Creates the next key when due, published `publishAhead` before it signs. */
  rotateIfDue(): Promise<SigningKeyRecord | undefined>;
  /** Retires keys past their time that no unexpired token uses; returns their kids. */
  retireUnused(): Promise<string[]>;
}

export interface KeyringOptions {
  store: Store;
  custody: KeyCustody;
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
  logger: Pick<Logger, 'info' | 'warn'>;
}

/** What the keyring last read of the store. */
interface View {
  readAt: number;
  /** Every unretired key, newest first. */
  active: SigningKeyRecord[];
  /** Those the JWKS serves, newest first. */
  published: SigningKeyRecord[];
  jwks: JSONWebKeySet;
  resolve: JWTVerifyGetKey;
}

/**
 * The broker's signing keys. Public halves live in the store, so every process on one database
 * serves the same JWKS, re-read at least every few seconds. With a key-encryption key (see
 * key-custody.ts), private halves live in the store too, sealed: one rotation for the whole
 * cluster, every process signing with the cluster's current key, and a process that joins signs
 * at once. Without one, private halves are files under `keyDir` and each process signs with a key
 * of its own. Either way a key signs only once it has been published for `publishAhead`: a
 * resource server that cached the JWKS a moment before a rotation still knows every key that
 * signs. Only the first key of an empty store signs at once: nobody can have cached a JWKS of it.
 */
export async function openKeyring(options: KeyringOptions): Promise<Keyring> {
  const { store, custody, algorithm, rotateEveryMs, publishAheadMs, clock, logger } = options;
  const halves = privateHalves(custody);
  const lead = Math.min(options.rotationCheckMs ?? 0, rotateEveryMs - publishAheadMs);
  const maxAge = Math.min(KEY_VIEW_MAX_AGE_MS, publishAheadMs / 4);
  const signsUntil = (key: SigningKeyRecord) => key.activatesAt + rotateEveryMs + SIGNING_SLACK_MS;
  /** Whether a key newer than this one had activated by `at`: until then this one is the cluster's newest that may sign. */
  const succeeded = (key: SigningKeyRecord, keys: readonly SigningKeyRecord[], at: number) =>
    keys.some((other) => other.activatesAt > key.activatesAt && other.activatesAt <= at);

  /** The next key is due when there is none of the configured algorithm that is still young enough. */
  const isDue = (keys: readonly SigningKeyRecord[], now: number) => {
    const newest = keys.find((key) => key.alg === algorithm && halves.holds(key));
    return !newest || newest.activatesAt + rotateEveryMs - publishAheadMs - lead <= now;
  };

  let view: View | undefined;
  let reads = 0;
  let shown = 0;
  let reading: Promise<View> | undefined;
  const warned = new Set<string>();
  /** The read whose keys the JWKS was last said to serve stale. */
  let staleWarned: number | undefined;

  async function read(): Promise<View> {
    const seq = (reads += 1);
    const readAt = clock();
    const active = await store.keys.active();
    const published = active.filter(halves.vouches);
    for (const key of active) {
      const failure = halves.failure(key);
      if (!failure || warned.has(key.kid)) continue;
      warned.add(key.kid);
      logger.warn({ kid: key.kid, code: failure.code, problem: failure.message }, 'a signing key in the store does not open here: it is neither published nor used by this process');
    }
    // The members that make the key, and no others: a row given x5c, x5u or key_ops behind the
    // broker's back would otherwise reach every resource server, vouched for by the opened key.
    const jwks = { keys: published.map((key) => ({ ...keyMembers(key.publicJwk), kid: key.kid, alg: key.alg, use: 'sig' })) };
    const next = { readAt, active, published, jwks, resolve: createLocalJWKSet(jwks) };
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

  /** At start: every sealed key must open, or this process was given the wrong key-encryption key. */
  function assertEveryKeyOpens(): void {
    for (const key of current().active) {
      const failure = halves.failure(key);
      if (failure) throw failure;
    }
  }

  /**
   * An upgrade to keys in the store: the private half of a key the store lists without one, found
   * as a file under `keyDir`, is sealed into the store, so the whole cluster signs with it at once
   * instead of waiting `publishAhead` for a new key.
   */
  async function sealKeyFiles(): Promise<void> {
    if (custody.kind !== 'store') return;
    let sealed = 0;
    for (const key of current().active) {
      const file = keyFile(custody.keyDir, key.kid);
      if (key.sealedPrivateKey !== null || file === undefined || !existsSync(file)) continue;
      const value = sealPrivateJwk(custody.keys, { ...readPrivateJwk(file), kid: key.kid, alg: key.alg }, key);
      openSealedKey(custody.keys, value, key); // a file that is not this key's private half is refused before anything is written
      const event = { type: 'key.sealed' as const, data: { kid: key.kid, alg: key.alg, key_encryption_key: custody.keys[0].id } };
      if (await store.keys.seal(key.kid, value, event)) {
        sealed += 1;
        logger.info({ kid: key.kid }, 'a key file was sealed into the store: every process given the key-encryption key signs with it');
      }
    }
    if (sealed > 0) await read();
  }

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
    async checkKeysOpen() {
      await fresh();
      assertEveryKeyOpens();
    },
    async signingKey() {
      const { published } = await fresh();
      const now = clock();
      // Past its time, a key still signs while its successor is published and not yet active:
      // after a stop longer than rotateEvery the broker signs at once with the key every JWKS
      // cache holds, for at most publishAhead, not 503. Without a successor (rotation failing) it stops.
      const awaited = published.some((key) => key.activatesAt > now);
      const usable = published.find((key) => key.activatesAt <= now && halves.holds(key) && (now < signsUntil(key) || (awaited && !succeeded(key, published, now))));
      if (!usable) throw new Unavailable('The broker has no signing key it may use yet.', { internal: { custody: custody.kind, keyDir: custody.keyDir } });
      try {
        return { kid: usable.kid, alg: usable.alg, privateKey: halves.load(usable) };
      } catch (error) {
        throw new Unavailable('The broker cannot sign right now.', {
          cause: error,
          internal: { kid: usable.kid, custody: custody.kind, keyDir: custody.keyDir, problem: (error as Error).message },
        });
      }
    },

    async jwks() {
      // CONTRACT section 3: cached for at most half of publishAhead, so every cache has
      // refreshed once between a key's publication and its first token (0 under 2 s).
      const maxAgeSeconds = Math.min(300, Math.floor(publishAheadMs / 2000));
      try {
        return { jwks: (await fresh()).jwks, maxAgeSeconds };
      } catch (error) {
        // The store does not answer (an outage, a partition). A key another process added since
        // the last read signs no sooner than publishAhead after it was added, so until publishAhead
        // after that read, the keys read then verify every token signed anywhere: resource servers
        // starting meanwhile still verify, for no longer than that lasts. Past it, 503.
        const left = view ? view.readAt + publishAheadMs - clock() : 0;
        if (!view || left <= 0) throw error;
        if (staleWarned !== view.readAt) {
          staleWarned = view.readAt; // once per outage, not once per request
          logger.warn({ err: error, read_at: new Date(view.readAt).toISOString() }, 'the store did not answer: the JWKS serves the keys read last');
        }
        return { jwks: view.jwks, maxAgeSeconds: Math.min(maxAgeSeconds, Math.floor(left / 1000)) };
      }
    },

    verificationKeys: () => verify,

    async refresh() {
      await read();
    },

    async rotateIfDue() {
      const now = clock();
      const known = current();
      // A process that cannot open a key of the cluster (it was not given the key-encryption key
      // the others seal with) adds none of its own: it would sign ahead of theirs, under the old one.
      if (!isDue(known.active, now) || known.active.some((key) => halves.failure(key))) return undefined;

      // Generate outside the store operation (it is async), then claim the rotation under the
      // store's lock: when two processes race, one inserts and the other discards its key.
      const jwk = await newPrivateJwk(algorithm);
      const kid = await calculateJwkThumbprint(publicJwk(jwk));
      const sealedPrivateKey = halves.keep(kid, algorithm, { ...jwk, kid, alg: algorithm });
      let record: SigningKeyRecord | undefined;
      const inserted = await store.keys.add(
        (keys) => {
          const others = keys.filter((key) => key.kid !== kid);
          if (!isDue(others, now) || others.some((key) => halves.failure(key))) return false;
          const newest = keys.find((key) => key.alg === algorithm && halves.holds(key) && key.kid !== kid);
          // Nobody can have cached a JWKS of a store with no keys: the first key signs at once.
          const activatesAt = keys.length === 0 ? now : Math.max(now + publishAheadMs, newest ? newest.activatesAt + rotateEveryMs : 0);
          record = { kid, alg: algorithm, publicJwk: publicJwk(jwk), createdAt: now, activatesAt, retiredAt: null, sealedPrivateKey };
          return record;
        },
        (key) => ({
          type: 'key.rotated',
          data: { kid, alg: algorithm, activates_at: new Date(key.activatesAt).toISOString(), previous_kid: known.active.find(halves.holds)?.kid ?? null },
        }),
      );
      if (!inserted) halves.discard(kid);
      await read();
      return inserted ? record : undefined;
    },

    async retireUnused() {
      const now = clock();
      const { active, published } = current();
      const retired: string[] = [];
      for (const key of active) {
        // The newest published key always stays, so the JWKS is never empty; so does one that may
        // still sign (no successor active for the grace).
        if (key === published[0] || signsUntil(key) + RETIRE_GRACE_MS > now || !succeeded(key, published, now - RETIRE_GRACE_MS)) continue;
        const done = await store.keys.retire(key.kid, now, now - RETIRE_GRACE_MS, { type: 'key.retired', data: { kid: key.kid, alg: key.alg } });
        if (!done) continue;
        retired.push(key.kid);
        halves.forget(key.kid);
      }
      if (retired.length > 0) await read();
      return retired;
    },
  };

  await read();
  if (custody.kind === 'store') {
    // Before rotating: a process with the wrong key-encryption key must not add a key of its own.
    assertEveryKeyOpens();
    await sealKeyFiles();
  }
  await keyring.rotateIfDue();
  // Another process may have won the first key of an empty store: it must open here too.
  assertEveryKeyOpens();
  // Fail at start, not at the first request, when the signing key cannot be read.
  const first = current().published.find((key) => key.activatesAt <= clock() && halves.holds(key));
  if (first) halves.load(first);
  logStart();
  return keyring;

  function logStart(): void {
    const { active, published } = current();
    if (custody.kind === 'files') {
      logger.info({ custody: 'files', keyDir: custody.keyDir, published: published.length }, 'signing keys: private halves in key files, one key per key directory');
      // Key files lost (a database restored without its keyDir, a new volume): the key made now
      // signs only once published for publishAhead, so say why the broker is not ready until then.
      const now = clock();
      if (!published.some((key) => key.activatesAt <= now && halves.holds(key))) {
        const next = published.filter(halves.holds).map((key) => key.activatesAt).sort((a, b) => a - b)[0];
        logger.warn(
          { keyDir: custody.keyDir, missing: published.filter((key) => !halves.holds(key)).map((key) => key.kid), signs_from: next === undefined ? null : toIso(next) },
          'no signing key this process may use yet: the key files of the published keys are not in keyDir; it signs once its new key has been published for signing.publishAhead, and is not ready until then',
        );
      }
      return;
    }
    const sealing = custody.keys[0].id;
    logger.info(
      {
        custody: 'store',
        key_encryption_key: sealing,
        published: published.length,
        // While the key-encryption key is rotated: the keys the older one still opens (README, Several replicas).
        sealed_under_older_keys: published.filter((key) => key.sealedPrivateKey && sealedUnder(key.sealedPrivateKey) !== sealing).map((key) => key.kid),
      },
      'signing keys: private halves sealed in the store, one key for every process',
    );
    const unsealed = active.filter((key) => key.sealedPrivateKey === null).map((key) => key.kid);
    if (unsealed.length > 0) {
      logger.warn(
        { kids: unsealed },
        'signing keys without a sealed private half are not published: no process given the key-encryption key held their key files (their tokens fail verification until they expire)',
      );
    }
  }
}
