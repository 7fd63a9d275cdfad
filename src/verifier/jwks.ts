import { createLocalJWKSet, errors, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import { readBoundedJson } from './bounded-json.js';

export interface BrokerKeysOptions {
  url: string;
  fetch: typeof fetch;
  now: () => number;
  /** The longest a fetched JWKS is used, whatever its `Cache-Control` allows. */
  maxAgeMs: number;
  /** The least time between two fetches prompted by a `kid` the cached JWKS does not hold. */
  cooldownMs: number;
  timeoutMs: number;
}

/** A fetch that could not give a usable JWKS: the token is refused as `unavailable`, never accepted. */
export class KeysUnavailable extends Error {
  override readonly name = 'KeysUnavailable';
}

interface CachedKeys {
  keys: JWTVerifyGetKey;
  freshUntil: number;
}

/**
 * The broker's JWKS as a resource server should hold it: fetched once, kept as long as the
 * broker's `Cache-Control: max-age` says (the broker publishes a key at least twice that long
 * before it signs with it, so a cache kept that long always knows the signing key), and fetched
 * again early when a token names a `kid` it does not hold, at most once per `cooldownMs` (a fetch
 * that failed counts) so a stream of tokens with made-up kids cannot make this process hammer the
 * broker, up or down. Without a fresh copy, a fetch that failed is not tried again before the
 * cooldown either: meanwhile every token is refused as the fetch was, or each token would fetch
 * from a broker that is down or overloaded. Time is the caller's `now`, not the process clock.
 * Whatever cannot be fetched or found is refused.
 */
export function brokerKeys(options: BrokerKeysOptions): JWTVerifyGetKey {
  const { url, now } = options;
  let cached: CachedKeys | undefined;
  let loading: Promise<CachedKeys> | undefined;
  // When the last fetch began, failed or not: the cooldown counts from it, or made-up kids would
  // fetch again on every token for as long as the broker fails.
  let attemptedAt = Number.NEGATIVE_INFINITY;
  // Why the last fetch failed, until one succeeds: with no fresh copy, tokens are refused for it
  // until the cooldown has passed, rather than each fetching again from a broker that fails.
  let failure: KeysUnavailable | undefined;

  async function load(): Promise<CachedKeys> {
    const fetchedAt = now();
    attemptedAt = fetchedAt;
    let response: Response;
    let body: unknown;
    try {
      response = await options.fetch(url, {
        headers: { accept: 'application/json' },
        // The JWKS is what every token is trusted by: keys from wherever a redirect leads are not taken.
        redirect: 'error',
        signal: AbortSignal.timeout(options.timeoutMs),
      });
      if (response.ok) body = await readBoundedJson(response);
      else void response.body?.cancel().catch(() => undefined);
    } catch (error) {
      throw new KeysUnavailable(`the broker's JWKS at ${url} could not be fetched`, { cause: error });
    }
    if (!response.ok) throw new KeysUnavailable(`the broker's JWKS at ${url} answered ${response.status}`);
    if (!isKeySet(body)) throw new KeysUnavailable(`the broker's JWKS at ${url} is not a JWK set`);
    const maxAgeMs = Math.min(options.maxAgeMs, cacheLifetimeMs(response.headers.get('cache-control')) ?? options.maxAgeMs);
    let keys: JWTVerifyGetKey;
    try {
      keys = createLocalJWKSet(body);
    } catch (error) {
      throw unusable(url, error);
    }
    return { keys, freshUntil: fetchedAt + maxAgeMs };
  }

  /** One fetch at a time: verifications waiting on a refresh share it. */
  const refresh = async (): Promise<CachedKeys> => {
    loading ??= load()
      .then(
        (loaded) => {
          failure = undefined;
          return loaded;
        },
        (error: unknown) => {
          failure = error instanceof KeysUnavailable ? error : new KeysUnavailable(`the broker's JWKS at ${url} could not be read`, { cause: error });
          throw failure;
        },
      )
      .finally(() => {
        loading = undefined;
      });
    cached = await loading;
    return cached;
  };

  const resolve = async (keys: JWTVerifyGetKey, header: Parameters<JWTVerifyGetKey>[0], token: Parameters<JWTVerifyGetKey>[1]) => {
    try {
      return await keys(header, token);
    } catch (error) {
      throw error instanceof errors.JWKSInvalid ? unusable(url, error) : error;
    }
  };
  return async (header, token) => {
    let current = cached && now() < cached.freshUntil ? cached : undefined;
    if (current === undefined) {
      // No fresh copy and the last fetch failed: refused as it was, one fetch per cooldown at most.
      if (loading === undefined && failure !== undefined && now() - attemptedAt < options.cooldownMs) throw failure;
      current = await refresh();
    }
    try {
      return await resolve(current.keys, header, token);
    } catch (error) {
      if (!(error instanceof errors.JWKSNoMatchingKey)) throw error;
      // A fetch under way may bring the key: wait for it rather than refuse.
      if (loading === undefined && now() - attemptedAt < options.cooldownMs) throw error;
      return resolve((await refresh()).keys, header, token);
    }
  };
}

/** A set jose cannot take (a member that is no key, a private key, found as it is read or as a key is used) is as good as none: unavailable, not the token's fault. */
const unusable = (url: string, cause: unknown) => new KeysUnavailable(`the broker's JWKS at ${url} is not a set of public keys`, { cause });

/** `max-age` in ms; 0 for `no-store` or `no-cache`; undefined when the response says nothing. */
function cacheLifetimeMs(cacheControl: string | null): number | undefined {
  if (!cacheControl) return undefined;
  if (/(?:^|,)\s*no-(?:store|cache)\b/i.test(cacheControl)) return 0;
  const maxAge = /(?:^|,)\s*max-age\s*=\s*"?(\d+)"?/i.exec(cacheControl);
  return maxAge ? Number(maxAge[1]) * 1000 : undefined;
}

const isKeySet = (body: unknown): body is JSONWebKeySet =>
  typeof body === 'object' && body !== null && Array.isArray((body as { keys?: unknown }).keys);
