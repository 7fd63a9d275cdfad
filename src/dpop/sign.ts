import { randomUUID, type KeyObject } from 'node:crypto';
import { SignJWT, type CryptoKey, type JWK } from 'jose';
import { accessTokenHash } from './access-token-hash.js';
import { normalizeTargetUri } from './target-uri.js';
import type { DPOP_SIGNING_ALGORITHMS } from './verify.js';

/** A client's DPoP key: it signs proofs, and its public half travels in each. */
export interface DpopSigningKey {
  alg: (typeof DPOP_SIGNING_ALGORITHMS)[number];
  privateKey: CryptoKey | KeyObject;
  publicJwk: JWK;
}

export interface DpopProofRequest {
  method: string;
  /** The URL the request goes to; a query or fragment is left out of the proof. */
  url: string;
  /** The access token sent with the request, if any: the proof then carries its hash (`ath`). */
  accessToken?: string | undefined;
  /** Now, in ms (default: the process clock). */
  now?: number | undefined;
}

/** The members RFC 7638 hashes: the public key and nothing else, whatever the given JWK holds. */
const PUBLIC_MEMBERS: Record<string, readonly string[]> = { EC: ['crv', 'x', 'y'], OKP: ['crv', 'x'], RSA: ['e', 'n'] };

/** A fresh proof (new `jti`, `iat` now) for one request, RFC 9449 section 4.2. */
export async function signDpopProof(key: DpopSigningKey, request: DpopProofRequest): Promise<string> {
  const htu = normalizeTargetUri(request.url);
  if (htu === undefined) throw new TypeError(`not an http(s) URL: ${request.url}`);
  const members = PUBLIC_MEMBERS[String(key.publicJwk.kty)];
  if (!members) throw new TypeError(`a DPoP key is EC, OKP or RSA, not ${String(key.publicJwk.kty)}`);
  const jwk = Object.fromEntries([['kty', key.publicJwk.kty], ...members.map((member) => [member, key.publicJwk[member as keyof JWK]])]) as JWK;
  return new SignJWT({
    jti: randomUUID(),
    htm: request.method,
    htu,
    iat: Math.floor((request.now ?? Date.now()) / 1000),
    ...(request.accessToken !== undefined ? { ath: accessTokenHash(request.accessToken) } : {}),
  })
    .setProtectedHeader({ alg: key.alg, typ: 'dpop+jwt', jwk })
    .sign(key.privateKey);
}
