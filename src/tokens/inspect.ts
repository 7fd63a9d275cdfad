import { jwtVerify, type JWTPayload } from 'jose';
import { SIGNING_ALGORITHMS } from '../config/schema.js';
import type { Keyring } from './keyring.js';
import { MAX_ACCESS_TOKEN_BYTES } from './mint.js';

/**
 * The claims of a token this broker minted and that is still within its lifetime, or undefined
 * for anything else: foreign, forged, expired, malformed. Whether it was revoked is the store's
 * business, not this function's.
 */
export async function readOwnToken(keyring: Keyring, issuer: string, token: string, now: number): Promise<JWTPayload | undefined> {
  if (token.length === 0 || token.length > MAX_ACCESS_TOKEN_BYTES) return undefined;
  try {
    const { payload } = await jwtVerify(token, keyring.verificationKeys(), {
      issuer,
      typ: 'at+jwt',
      algorithms: [...SIGNING_ALGORITHMS],
      currentDate: new Date(now),
      requiredClaims: ['jti', 'exp', 'sub'],
    });
    return payload;
  } catch {
    return undefined;
  }
}
