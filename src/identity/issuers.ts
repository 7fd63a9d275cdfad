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

/** How often an unknown `kid` may trigger a refetch of a remote JWKS. */
export const JWKS_COOLDOWN_MS = 5_000;
/** How long fetched keys are trusted before they are fetched again. */
export const JWKS_CACHE_MAX_AGE_MS = 10 * 60_000;

export interface TrustedIssuer {
  config: IssuerConfig;
  /** Resolves the verification key for a token; throws `KeySourceUnavailable` when keys cannot be had. */
  keys: JWTVerifyGetKey;
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

/** Builds every trusted issuer's key source, keyed by exact `iss`. File and inline sets are read now. */
export async function loadTrustedIssuers(
  configs: readonly IssuerConfig[],
  options: IssuerOptions = {},
): Promise<Map<string, TrustedIssuer>> {
  const issuers = new Map<string, TrustedIssuer>();
  for (const config of configs) {
    issuers.set(config.issuer, { config, keys: guardKeySource(await keySource(config, options)) });
  }
  return issuers;
}

async function keySource(config: IssuerConfig, options: IssuerOptions): Promise<JWTVerifyGetKey> {
  if (config.jwksUri !== undefined) {
    return createRemoteJWKSet(new URL(config.jwksUri), {
      timeoutDuration: config.jwksTimeout,
      cooldownDuration: JWKS_COOLDOWN_MS,
      cacheMaxAge: JWKS_CACHE_MAX_AGE_MS,
      ...(options.fetch ? { [customFetch]: options.fetch } : {}),
    });
  }
  if (config.jwksFile !== undefined) return createLocalJWKSet(readJwksFile(config));
  if (config.jwks !== undefined) return createLocalJWKSet(config.jwks as JSONWebKeySet);
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
