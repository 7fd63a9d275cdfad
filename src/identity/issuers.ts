import { readFileSync } from 'node:fs';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  customFetch,
  errors,
  type FetchImplementation,
  type JSONWebKeySet,
  type JWTVerifyGetKey,
} from 'jose';
import { ConfigError } from '../config/index.js';
import type { IssuerConfig } from '../config/index.js';
import { devIssuerJwks } from './dev-issuer.js';
import { jwtSvidKeySet } from './spiffe.js';

/** How often an unknown `kid` may trigger a refetch of a remote JWKS. */
export const JWKS_COOLDOWN_MS = 5_000;
/** How long fetched keys are trusted before they are fetched again. */
export const JWKS_CACHE_MAX_AGE_MS = 10 * 60_000;

export interface TrustedIssuer {
  config: IssuerConfig;
  /** Resolves the verification key for a token; throws `KeySourceUnavailable` when keys cannot be had. */
  keys: JWTVerifyGetKey;
}

/** Every trusted issuer, by the two ways a token is routed to one. */
export interface TrustedIssuers {
  /** By exact `iss`: every issuer configured with an `issuer`. */
  byIss: ReadonlyMap<string, TrustedIssuer>;
  /** By SPIFFE trust domain: issuers with a `spiffeTrustDomain`, whose tokens are routed by `sub`. */
  byTrustDomain: ReadonlyMap<string, TrustedIssuer>;
}

/** The issuer's keys could not be obtained (JWKS unreachable, slow, or not a JWKS): fail closed. */
export class KeySourceUnavailable extends Error {
  constructor(cause: unknown) {
    super(`issuer keys unavailable: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.name = 'KeySourceUnavailable';
  }
}

export interface IssuerOptions {
  /** Injected so tests can control the network; defaults to global fetch. */
  fetch?: FetchImplementation;
}

/** Builds every trusted issuer's key source. File and inline sets are read now, remote ones on first use. */
export async function loadTrustedIssuers(configs: readonly IssuerConfig[], options: IssuerOptions = {}): Promise<TrustedIssuers> {
  const byIss = new Map<string, TrustedIssuer>();
  const byTrustDomain = new Map<string, TrustedIssuer>();
  for (const config of configs) {
    const issuer = { config, keys: guardKeySource(await keySource(config, options)) };
    if (config.issuer !== undefined) byIss.set(config.issuer, issuer);
    if (config.spiffeTrustDomain !== undefined) byTrustDomain.set(config.spiffeTrustDomain, issuer);
  }
  return { byIss, byTrustDomain };
}

async function keySource(config: IssuerConfig, options: IssuerOptions): Promise<JWTVerifyGetKey> {
  // A SPIFFE trust bundle marks its JWT-SVID keys `use: jwt-svid`; other sets are taken as they are.
  const prepare = config.spiffeTrustDomain !== undefined ? jwtSvidKeySet : (jwks: JSONWebKeySet) => jwks;
  if (config.jwksUri !== undefined) {
    return createRemoteJWKSet(new URL(config.jwksUri), {
      timeoutDuration: config.jwksTimeout,
      cooldownDuration: JWKS_COOLDOWN_MS,
      cacheMaxAge: JWKS_CACHE_MAX_AGE_MS,
      ...(options.fetch ? { [customFetch]: options.fetch } : {}),
    });
  }
  if (config.jwksFile !== undefined) return createLocalJWKSet(prepare(readJwksFile(config)));
  if (config.jwks !== undefined) return createLocalJWKSet(prepare(config.jwks as JSONWebKeySet));
  if (config.dev !== undefined) return createLocalJWKSet(await devIssuerJwks(config.dev.keyDir));
  throw new ConfigError(config.name, ['no key source']); // the schema makes this unreachable
}

function readJwksFile(config: IssuerConfig): JSONWebKeySet {
  const path = config.jwksFile as string;
  try {
    const jwks = JSON.parse(readFileSync(path, 'utf8')) as JSONWebKeySet;
    if (!Array.isArray(jwks?.keys)) throw new Error('no "keys" array');
    return jwks;
  } catch (error) {
    throw new ConfigError(path, [`issuer "${config.name}": jwksFile is not a readable JWKS (${(error as Error).message})`]);
  }
}

/**
 * Separates "no key matches this token" (the token's fault) from "the keys could not be had"
 * (the network's fault), so the verifier can say which; both refuse the identity.
 */
function guardKeySource(resolve: JWTVerifyGetKey): JWTVerifyGetKey {
  return async (header, token) => {
    try {
      return await resolve(header, token);
    } catch (error) {
      if (error instanceof errors.JWKSNoMatchingKey || error instanceof errors.JWKSMultipleMatchingKeys) throw error;
      if (error instanceof errors.JOSENotSupported || error instanceof errors.JOSEAlgNotAllowed) throw error;
      throw new KeySourceUnavailable(error);
    }
  };
}
