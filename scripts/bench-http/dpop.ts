/**
 * DPoP proofs (RFC 9449) for the load: one fresh proof per request, as a client sends them. They
 * are signed just before each stretch of load (a warm-up, a run, a turn), so that the load
 * generator, which shares the machine's cores with the broker, does not sign while the broker is
 * measured; should the load outrun them, the rest are signed as they are sent.
 */
import { generateKeyPairSync, randomUUID, sign, type KeyObject } from 'node:crypto';

/** Proofs signed ahead for each second of load: more than any run on this kind of machine answers. */
const PROOFS_PER_SECOND = 3_000;

export interface ProofSource {
  /** A proof never sent before, for a POST to `htu`. */
  next(): string;
  /** Signs fresh proofs for `seconds` of load about to start (the older ones are dropped). */
  prepare(seconds: number): void;
}

/** An ES256 key of the client's, and proofs by it for POSTs to `htu`. */
export function dpopProofs(htu: string): ProofSource {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const { kty, crv, x, y } = publicKey.export({ format: 'jwk' });
  const header = Buffer.from(JSON.stringify({ typ: 'dpop+jwt', alg: 'ES256', jwk: { kty, crv, x, y } })).toString('base64url');
  const proof = () => signed(privateKey, header, { jti: randomUUID(), htm: 'POST', htu, iat: Math.floor(Date.now() / 1000) });
  let ahead: string[] = [];
  return {
    next: () => ahead.pop() ?? proof(),
    prepare(seconds) {
      ahead = Array.from({ length: seconds * PROOFS_PER_SECOND }, proof);
    },
  };
}

function signed(privateKey: KeyObject, header: string, payload: Record<string, unknown>): string {
  const input = `${header}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}`;
  // JWS ES256 signatures are r || s (IEEE P1363), not DER.
  return `${input}.${sign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
}
