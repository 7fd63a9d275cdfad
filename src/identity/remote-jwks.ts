import { createLocalJWKSet, errors, type FetchImplementation, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import { readBoundedBody, utf8 } from '../shared/bounded-body.js';
import { systemClock, type Clock } from '../shared/clock.js';

/**
 * Keys fetched from an issuer's `jwksUri`. Our own, rather than jose's createRemoteJWKSet,
 * because an issuer's endpoint is outside our control and must not be able to stall, flood or
 * be flooded by the broker: each fetch has a deadline and a size cap, a failed fetch is not
 * retried for a while, and callers share one fetch in flight. Verification itself is jose's,
 * over the fetched set. Fails closed: keys that cannot be had are `KeySourceUnavailable`.
 */

/** How often an unknown `kid` may trigger a refetch: a stream of made-up kids must not become a stream of fetches. */
export const JWKS_COOLDOWN_MS = 5_000;
/** After a failed fetch, identities needing these keys are refused at once, with no new fetch, for this long. */
export const JWKS_FAILURE_COOLDOWN_MS = 30_000;
/** How long fetched keys are trusted before they are fetched again: a key the issuer withdrew stops working by then. */
export const JWKS_CACHE_MAX_AGE_MS = 10 * 60_000;
/**
 * The largest JWKS read. Real sets are a few KiB (a 4096-bit RSA key is under 1 KiB of JSON);
 * the body is read piece by piece and the fetch aborted past this, so a hostile or broken
 * endpoint cannot make the broker buffer an unbounded answer.
 */
export const JWKS_MAX_BYTES = 512 * 1024;
/** The most keys a JWKS may hold: every token whose kid is unknown is tried against all of them. */
export const JWKS_MAX_KEYS = 100;

/** The issuer's keys could not be obtained (JWKS unreachable, slow, too large, or not a JWKS): fail closed. */
export class KeySourceUnavailable extends Error {
  constructor(cause: unknown) {
    super(`issuer keys unavailable: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.name = 'KeySourceUnavailable';
  }
}

export interface RemoteKeySourceOptions {
  /** The deadline of one fetch, body included (the issuer's `jwksTimeout`). */
  timeoutMs: number;
  /** Injected so tests can control the network; defaults to global fetch. */
  fetch?: FetchImplementation | undefined;
  /** Judges the cooldowns and the cache age; injected so tests need not wait. */
  clock?: Clock | undefined;
  /** Applied to each fetched set before use (a SPIFFE bundle's `jwt-svid` keys become `sig`). */
  prepare?: ((jwks: JSONWebKeySet) => JSONWebKeySet) | undefined;
}

export function createRemoteKeySource(url: URL, options: RemoteKeySourceOptions): JWTVerifyGetKey {
  const fetchJwks = options.fetch ?? (fetch as FetchImplementation);
  const clock = options.clock ?? systemClock;
  const prepare = options.prepare ?? ((jwks: JSONWebKeySet) => jwks);

  let keys: JWTVerifyGetKey | undefined;
  let fetchedAt = Number.NEGATIVE_INFINITY;
  let failedAt = Number.NEGATIVE_INFINITY;
  let inFlight: Promise<JWTVerifyGetKey> | undefined;

  const load = async (): Promise<JWTVerifyGetKey> => {
    const abort = new AbortController();
    const response = await fetchJwks(url.href, {
      method: 'GET',
      headers: new Headers({ accept: 'application/jwk-set+json, application/json' }),
      // A redirect could lead anywhere, plain http or an internal host included: not followed.
      redirect: 'manual',
      signal: AbortSignal.any([abort.signal, AbortSignal.timeout(options.timeoutMs)]),
    });
    try {
      if (response.status !== 200) throw new Error(`the JWKS endpoint answered ${response.status}`);
      const jwks = JSON.parse(await readCapped(response, abort)) as unknown;
      if (!isKeySet(jwks)) throw new Error('the JWKS endpoint did not answer a JWKS');
      if (jwks.keys.length > JWKS_MAX_KEYS) throw new Error(`the JWKS holds ${jwks.keys.length} keys, more than ${JWKS_MAX_KEYS}`);
      return createLocalJWKSet(prepare(jwks));
    } finally {
      // Whatever was not read is not wanted: release the connection.
      abort.abort();
    }
  };

  /** One fetch at a time; every caller meanwhile waits for that one. */
  const reload = (): Promise<JWTVerifyGetKey> => {
    inFlight ??= load()
      .then(
        (loaded) => {
          keys = loaded;
          fetchedAt = clock();
          return loaded;
        },
        (error: unknown) => {
          failedAt = clock();
          throw new KeySourceUnavailable(error);
        },
      )
      .finally(() => {
        inFlight = undefined;
      });
    return inFlight;
  };

  const failedLately = () => clock() - failedAt < JWKS_FAILURE_COOLDOWN_MS;

  return async (header, token) => {
    let current = keys !== undefined && clock() - fetchedAt < JWKS_CACHE_MAX_AGE_MS ? keys : undefined;
    if (current === undefined) {
      if (inFlight === undefined && failedLately()) throw new KeySourceUnavailable(new Error('the last fetch failed; not trying again yet'));
      current = await reload();
    }
    try {
      return await current(header, token);
    } catch (error) {
      if (!(error instanceof errors.JWKSNoMatchingKey)) throw error;
      // An unknown kid may be a key the issuer has just rotated in: fetch again, but not more
      // often than the cooldown, nor while the endpoint is failing.
      if (inFlight === undefined && (clock() - fetchedAt < JWKS_COOLDOWN_MS || failedLately())) throw error;
      return (await reload())(header, token);
    }
  };
}

/**
 * The body as text, given up past `JWKS_MAX_BYTES`, declared or not (`abort` is the fetch's,
 * aborted then). Also how the CLI reads a JWKS an auditor names.
 */
export async function readCapped(response: Response, abort: AbortController): Promise<string> {
  const tooLarge = () => {
    abort.abort();
    return new Error(`the JWKS is larger than ${JWKS_MAX_BYTES} bytes`);
  };
  return utf8(await readBoundedBody(response, JWKS_MAX_BYTES, tooLarge));
}

const isKeySet = (value: unknown): value is JSONWebKeySet =>
  typeof value === 'object' && value !== null && Array.isArray((value as { keys?: unknown }).keys);
