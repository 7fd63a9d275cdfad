/**
 * DPoP proofs (RFC 9449) for the load: one fresh proof per request, as a client sends them. They
 * are signed ahead of the load, so that the load generator, which shares the machine's cores with
 * the broker, does not spend the run signing; should the load outrun them, the rest are signed as
 * they are sent.
 */
import { generateKeyPairSync, randomUUID, sign, type KeyObject } from 'node:crypto';

/** Proofs older than this are signed afresh: the broker accepts them for `clockSkew` (30 s in the bench). */
const FRESH_FOR_MS = 20_000;

export interface ProofSource {
  /** A proof never sent before, for a POST to `htu`. */
  next(): string;
}

/** An ES256 key of the client's, and proofs for POSTs to `htu` (`expected`: how many to sign ahead). */
export function dpopProofs(htu: string, expected: number): ProofSource {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const { kty, crv, x, y } = publicKey.export({ format: 'jwk' });
  const header = Buffer.from(JSON.stringify({ typ: 'dpop+jwt', alg: 'ES256', jwk: { kty, crv, x, y } })).toString('base64url');
  const proof = () => signed(privateKey, header, { jti: randomUUID(), htm: 'POST', htu, iat: Math.floor(Date.now() / 1000) });
  const signedAt = Date.now();
  const ahead = Array.from({ length: expected }, proof);
  return {
    next: () => (Date.now() - signedAt < FRESH_FOR_MS ? ahead.pop() : undefined) ?? proof(),
  };
}

function signed(privateKey: KeyObject, header: string, payload: Record<string, unknown>): string {
  const input = `${header}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`;
  // JWS ES256 signatures are r || s (IEEE P1363), not DER.
  return `${input}.${sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
}
