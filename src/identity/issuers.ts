import { readFileSync } from 'node:fs';
import { createLocalJWKSet, errors, type FetchImplementation, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import { ConfigError, PRIVATE_JWK_REFUSED, privateJwkMember } from '../config/index.js';
import type { IssuerConfig } from '../config/index.js';
import type { Clock } from '../shared/clock.js';
import { devIssuerJwks } from './dev-issuer.js';
import { createRemoteKeySource, KeySourceUnavailable } from './remote-jwks.js';
import { jwtSvidKeySet } from './spiffe.js';

export { KeySourceUnavailable } from './remote-jwks.js';

export interface TrustedIssuer {
  config: IssuerConfig;
  /** Resolves the verification key for a token; throws `KeySourceUnavailable` when keys cannot be had. */
  keys: JWTVerifyGetKey;
}

/** Issuers by the two ways a token is routed to one (see `findIssuer`). */
export interface IssuerRoutes<T extends { config: IssuerConfig }> {
  /** By exact `iss`: every issuer configured with an `issuer`. */
  byIss: ReadonlyMap<string, T>;
  /** By SPIFFE trust domain: issuers with a `spiffeTrustDomain`, whose tokens are routed by `sub`. */
  byTrustDomain: ReadonlyMap<string, T>;
}

/** Every trusted issuer, with its keys, by the two ways a token is routed to one. */
export type TrustedIssuers = IssuerRoutes<TrustedIssuer>;

/** Issuers by their `issuer` and by their `spiffeTrustDomain`: the routes a token may take to one. */
export function issuerRoutes<T extends { config: IssuerConfig }>(issuers: readonly T[]): IssuerRoutes<T> {
  const byIss = new Map<string, T>();
  const byTrustDomain = new Map<string, T>();
  for (const issuer of issuers) {
    if (issuer.config.issuer !== undefined) byIss.set(issuer.config.issuer, issuer);
    if (issuer.config.spiffeTrustDomain !== undefined) byTrustDomain.set(issuer.config.spiffeTrustDomain, issuer);
  }
  return { byIss, byTrustDomain };
}

export interface IssuerOptions {
  /** Injected so tests can control the network; defaults to global fetch. */
  fetch?: FetchImplementation;
  /** Judges remote key sets' cooldowns and cache age; defaults to the system clock. */
  clock?: Clock;
}

/** Builds every trusted issuer's key source. File and inline sets are read now, remote ones on first use. */
export async function loadTrustedIssuers(configs: readonly IssuerConfig[], options: IssuerOptions = {}): Promise<TrustedIssuers> {
  const issuers: TrustedIssuer[] = [];
  for (const config of configs) issuers.push({ config, keys: guardKeySource(await keySource(config, options)) });
  return issuerRoutes(issuers);
}

async function keySource(config: IssuerConfig, options: IssuerOptions): Promise<JWTVerifyGetKey> {
  // A SPIFFE trust bundle marks its JWT-SVID keys `use: jwt-svid`; other sets are taken as they are.
  const prepare = config.spiffeTrustDomain !== undefined ? jwtSvidKeySet : (jwks: JSONWebKeySet) => jwks;
  if (config.jwksUri !== undefined) {
    return createRemoteKeySource(new URL(config.jwksUri), {
      timeoutMs: config.jwksTimeout,
      fetch: options.fetch,
      clock: options.clock,
      prepare,
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
    let jwks: JSONWebKeySet;
    try {
      jwks = JSON.parse(readFileSync(path, 'utf8')) as JSONWebKeySet;
    } catch (error) {
      // Not JSON.parse's message, which quotes the file: pointed at a secret by mistake, it would log a piece of it.
      throw error instanceof SyntaxError ? new Error('not JSON') : error;
    }
    if (!Array.isArray(jwks?.keys)) throw new Error('no "keys" array');
    jwks.keys.forEach((key, i) => {
      if (typeof key !== 'object' || key === null || Array.isArray(key)) throw new Error(`key ${i} is not a JWK object`);
      if (privateJwkMember(key as Record<string, unknown>) !== undefined) throw new Error(`key ${i} ${PRIVATE_JWK_REFUSED}`);
    });
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
      if (error instanceof KeySourceUnavailable) throw error;
      throw new KeySourceUnavailable(error);
    }
  };
}
