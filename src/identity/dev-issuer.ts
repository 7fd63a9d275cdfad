import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, SignJWT, type JSONWebKeySet, type JWK } from 'jose';
import { DEV_ISSUER_ALGORITHM, type IssuerConfig } from '../config/schema.js';
import { ensureKeyDir, publicJwk, readPrivateJwk, writePrivateJwk } from '../shared/key-files.js';

/**
 * DEVELOPMENT ONLY. A local identity issuer so a newcomer can get a credential with no CI or
 * SSO at hand: the broker trusts the public half of a key pair under `dev.keyDir`, and
 * `jit dev-token` signs identity tokens with the private half. Whoever can read that directory
 * can be anyone to the broker, which is why only the shipped development config enables it.
 */

const KEY_FILE = 'dev-issuer.jwk.json';

/** Loads the dev issuer's key, creating it on first use (by the broker or the CLI, whichever is first). */
export async function loadOrCreateDevKey(keyDir: string): Promise<JWK> {
  const path = join(keyDir, KEY_FILE);
  ensureKeyDir(keyDir);
  try {
    return readPrivateJwk(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const { privateKey } = await generateKeyPair(DEV_ISSUER_ALGORITHM, { extractable: true });
  const jwk = await exportJWK(privateKey);
  const key = { ...jwk, kid: await calculateJwkThumbprint(jwk), alg: DEV_ISSUER_ALGORITHM, use: 'sig' };
  try {
    writePrivateJwk(path, key);
    return key;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return readPrivateJwk(path); // another process won
    throw error;
  }
}

/**
 * Whether the broker (or an earlier mint) has made this issuer's key. `jit dev-token` mints only
 * then: a key it made itself, where no broker looks, would sign tokens no broker accepts.
 */
export function devKeyExists(keyDir: string): boolean {
  return existsSync(join(keyDir, KEY_FILE));
}

export async function devIssuerJwks(keyDir: string): Promise<JSONWebKeySet> {
  return { keys: [publicJwk(await loadOrCreateDevKey(keyDir))] };
}

export interface DevTokenOptions {
  subject: string;
  claims?: Record<string, unknown>;
  ttlSeconds?: number;
  now?: number;
}

/** An identity token as the configured dev issuer would mint it: its `iss`, its first audience. */
export async function mintDevIdentityToken(issuer: IssuerConfig, options: DevTokenOptions): Promise<string> {
  // The schema gives every dev issuer an `issuer` (it is never a SPIFFE one); checked again here for the types.
  if (!issuer.dev || issuer.issuer === undefined) throw new Error(`issuer "${issuer.name}" is not a development issuer`);
  const jwk = await loadOrCreateDevKey(issuer.dev.keyDir);
  const now = Math.floor((options.now ?? Date.now()) / 1000);
  // The claims its issuer requires, so that a plain `jit dev-token --sub x` is accepted: a person
  // named by the subject, a job started by no one in particular (a name equal to no person's).
  const nameClaim = issuer.usernameClaim ?? issuer.initiatorClaim;
  return new SignJWT({ ...(nameClaim !== undefined ? { [nameClaim]: options.subject } : {}), ...options.claims })
    .setProtectedHeader({ alg: DEV_ISSUER_ALGORITHM, kid: jwk.kid as string, typ: 'JWT' })
    .setIssuer(issuer.issuer)
    .setSubject(options.subject)
    .setAudience(issuer.audiences[0] as string)
    .setIssuedAt(now)
    .setExpirationTime(now + (options.ttlSeconds ?? 600))
    .setJti(crypto.randomUUID())
    .sign(await importJWK(jwk, DEV_ISSUER_ALGORITHM));
}
