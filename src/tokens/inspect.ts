import { jwtVerify, type JWTPayload } from 'jose';
import { SIGNING_ALGORITHMS } from '../config/schema.js';
import { BrokerError } from '../shared/errors.js';
import type { Keyring } from './keyring.js';
import { MAX_ACCESS_TOKEN_BYTES } from './mint.js';

/**
 * The claims of a token this broker minted and that is still within its lifetime, or undefined
 * for anything else: foreign, forged, expired, malformed. Whether it was revoked is the store's
 * business, not this function's. The broker failing to read its own keys (the store out of reach,
 * 503) is no answer about the token: it is thrown, never taken for a token it did not mint, which
 * would have introspection call a live token inactive and revocation answer 200 revoking nothing.
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
  } catch (error) {
    if (error instanceof BrokerError) throw error;
    return undefined;
  }
}
