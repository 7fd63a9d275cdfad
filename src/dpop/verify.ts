import {
  calculateJwkThumbprint,
  decodeProtectedHeader,
  errors,
  importJWK,
  jwtVerify,
  type CryptoKey,
  type JWTPayload,
  type ProtectedHeaderParameters,
} from 'jose';
import { InvalidDpopProof, type DpopProofProblem } from '../shared/errors.js';
import { textProblem } from '../shared/well-formed.js';
import { accessTokenHash } from './access-token-hash.js';
import { ASYMMETRIC_ALGORITHMS } from '../shared/algorithms.js';
import { hasDotSegment, htuProblem, normalizeTargetUri } from './target-uri.js';

/** The JWS algorithms a proof may ever use, whatever is configured: asymmetric ones only. */
export const DPOP_SIGNING_ALGORITHMS = ASYMMETRIC_ALGORITHMS;

/** A proof larger than this is refused unread: it is a header, and holds one public key. */
export const MAX_DPOP_PROOF_BYTES = 8 * 1024;

/** A `jti` is remembered by every replica until its window ends: it must stay small. */
export const MAX_DPOP_JTI_BYTES = 256;

/** JWK members that only a private or secret key has (RFC 7518 section 6). */
const PRIVATE_KEY_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const;

/** What the request a proof arrived with says it must be. */
export interface ExpectedDpopProof {
  /** The request's HTTP method, as received (`POST`). */
  method: string;
  /**
   * The request's URL as this server names itself: its public base URL (the broker's `issuer`)
   * plus the path (see `dpopTargetUri`), never built from the Host header. A query or fragment is
   * ignored.
   */
  url: string;
  /** The configured proof algorithms (`dpop.algorithms`); only the asymmetric ones count. */
  algorithms: readonly string[];
  /** Now, in ms. */
  now: number;
  /** How far `iat` may lie from now, either way, in ms (`clockSkew`). */
  clockSkewMs: number;
  /** The access token the request presents with the proof: its hash must be the proof's `ath`. */
  accessToken?: string | undefined;
  /** The thumbprint the token is bound to (a bound parent token's `cnf.jkt`): the proof's key must have it. */
  jkt?: string | undefined;
}

export interface VerifiedDpopProof {
  /** RFC 7638 SHA-256 thumbprint of the proof's key: what `cnf.jkt` binds a token to. */
  jkt: string;
  jti: string;
  /** The proof's `iat`, seconds since the epoch. */
  iat: number;
  /**
   * The first instant, in ms, at which the proof is no longer accepted: `iat` plus the skew plus
   * 1 ms, since it is still accepted at `iat` plus the skew itself. Its `jti` must be remembered
   * as seen until then; a record that ends at or before now may be forgotten.
   */
  replayWindowEndsAt: number;
}

/**
 * Checks a DPoP proof as RFC 9449 section 4.3 says, except for replay: the caller records the
 * returned `jti` until `replayWindowEndsAt` and refuses one it has seen. Every failure, whatever
 * the input, is an `InvalidDpopProof` saying what was wrong.
 */
export async function verifyDpopProof(proof: string, expected: ExpectedDpopProof): Promise<VerifiedDpopProof> {
  if (typeof proof !== 'string' || proof === '') throw refuse('malformed', 'is empty');
  if (proof.length > MAX_DPOP_PROOF_BYTES || Buffer.byteLength(proof, 'utf8') > MAX_DPOP_PROOF_BYTES) {
    throw refuse('too_large', `is larger than ${MAX_DPOP_PROOF_BYTES / 1024} KiB`);
  }

  const header = readHeader(proof);
  // RFC 7515 section 4.1.9: a media type without a "/" is "application/" and it, case-insensitively.
  if (typeof header.typ !== 'string' || header.typ.toLowerCase().replace(/^application\//, '') !== 'dpop+jwt') {
    throw refuse('type', 'must have the header typ dpop+jwt');
  }
  const algorithms = expected.algorithms.filter((alg) => (DPOP_SIGNING_ALGORITHMS as readonly string[]).includes(alg));
  if (typeof header.alg !== 'string' || !algorithms.includes(header.alg)) {
    throw refuse('algorithm', `must be signed with one of ${algorithms.join(', ') || '(no algorithm is configured)'}`);
  }
  const { key, jkt } = await publicKeyOf(header);

  const skewSeconds = Math.ceil(expected.clockSkewMs / 1000);
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(proof, key, {
      typ: 'dpop+jwt',
      algorithms,
      currentDate: new Date(expected.now),
      clockTolerance: skewSeconds,
    }));
  } catch (error) {
    throw verificationFailure(error);
  }

  const jti = stringClaim(payload, 'jti');
  const htm = stringClaim(payload, 'htm');
  const htu = stringClaim(payload, 'htu');
  const { iat, ath } = payload;
  if (typeof iat !== 'number' || !Number.isFinite(iat)) throw refuse('claim', 'has no iat claim (a number)');
  if (Buffer.byteLength(jti, 'utf8') > MAX_DPOP_JTI_BYTES || textProblem(jti) !== undefined) {
    throw refuse('claim', `has a jti that is not well-formed text (no lone surrogate, no NUL) of at most ${MAX_DPOP_JTI_BYTES} bytes`);
  }

  // RFC 9110 section 9.1: methods are case-sensitive.
  if (htm !== expected.method) throw refuse('method', `is for another HTTP method: its htm must be ${expected.method}`);
  checkTargetUri(htu, expected.url);

  const issuedAt = iat * 1000;
  if (issuedAt < expected.now - expected.clockSkewMs) {
    throw refuse('stale', `was made more than ${skewSeconds} s ago (its iat): make a fresh proof for every request`);
  }
  if (issuedAt > expected.now + expected.clockSkewMs) throw refuse('future', `is dated more than ${skewSeconds} s in the future (its iat)`);

  if (expected.accessToken !== undefined) {
    if (typeof ath !== 'string') throw refuse('claim', "has no ath claim (the hash of the access token it is sent with)");
    if (ath !== accessTokenHash(expected.accessToken)) throw refuse('access_token_hash', 'was made for another access token (its ath)');
  }

  if (expected.jkt !== undefined && jkt !== expected.jkt) {
    throw refuse('key_mismatch', 'is signed by another key than the one the token is bound to (cnf.jkt)');
  }
  // A NumericDate may have a fraction (RFC 7519 section 2); the window ends on a whole ms, rounded up, never earlier.
  return { jkt, jti, iat, replayWindowEndsAt: Math.ceil(issuedAt) + expected.clockSkewMs + 1 };
}

const refuse = (problem: DpopProofProblem, what: string) => new InvalidDpopProof(problem, `The DPoP proof ${what}.`);

function stringClaim(payload: JWTPayload, claim: 'jti' | 'htm' | 'htu'): string {
  const value = payload[claim];
  if (typeof value !== 'string' || value === '') throw refuse('claim', `has no ${claim} claim (a string)`);
  return value;
}

function readHeader(proof: string): ProtectedHeaderParameters {
  try {
    return decodeProtectedHeader(proof);
  } catch {
    throw refuse('malformed', 'is not a compact JWS');
  }
}

/**
 * Keys imported from proofs' headers, with their thumbprints, by algorithm and the `jwk` as sent:
 * a client signs every proof with one key, and importing it (WebCrypto validates the point) costs
 * more than verifying the signature. Bounded, oldest out first: many keys only cost their import
 * again.
 */
const importedKeys = new Map<string, ProofKey>();
const MAX_IMPORTED_KEYS = 256;

/**
 * The header's `jwk`, checked to be a public key of the header's algorithm, and imported: the
 * key the proof is then verified with (as jose's EmbeddedJWK would, once; checking first says
 * what was wrong).
 */
interface ProofKey {
  key: CryptoKey;
  /** RFC 7638 thumbprint (SHA-256): what `cnf.jkt` names. */
  jkt: string;
}

/** A 4096-bit RSA modulus in base64url: 512 bytes. */
const RSA_MAX_MODULUS_B64 = Math.ceil((4096 / 8) * 4 / 3);

async function publicKeyOf(header: ProtectedHeaderParameters): Promise<ProofKey> {
  const { jwk } = header;
  if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) throw refuse('key', 'must carry its public key in the header (jwk)');
  if (jwk.kty === 'oct' || PRIVATE_KEY_MEMBERS.some((member) => Object.hasOwn(jwk, member))) {
    throw refuse('key', 'must carry a public key only (its jwk holds a private or secret key)');
  }
  if ((jwk.alg !== undefined && jwk.alg !== header.alg) || (jwk.use !== undefined && jwk.use !== 'sig')) {
    throw refuse('key', 'has a jwk meant for another algorithm or use than signing with its alg');
  }
  // An RSA key of any size would make each verification as slow as its caller likes (a 16384-bit
  // modulus with a wide exponent costs ~25 times a 2048-bit one), before any limit is counted.
  if (jwk.kty === 'RSA' && (typeof jwk.n !== 'string' || jwk.n.length > RSA_MAX_MODULUS_B64 || jwk.e !== 'AQAB')) {
    throw refuse('key', 'has an RSA key larger than 4096 bits, or with a public exponent other than 65537');
  }
  const cacheKey = `${String(header.alg)} ${JSON.stringify(jwk)}`;
  const cached = importedKeys.get(cacheKey);
  if (cached) return cached;
  let proofKey: ProofKey;
  try {
    const key = await importJWK(jwk, header.alg);
    if (key instanceof Uint8Array || key.type !== 'public') throw new TypeError('not a public key');
    proofKey = { key, jkt: await calculateJwkThumbprint(jwk, 'sha256') };
  } catch {
    throw refuse('key', `has a jwk that is not a usable ${String(header.alg)} public key`);
  }
  if (importedKeys.size >= MAX_IMPORTED_KEYS) importedKeys.delete(importedKeys.keys().next().value as string);
  importedKeys.set(cacheKey, proofKey);
  return proofKey;
}

/** jose's refusals, said in terms of the proof; anything unforeseen is still the proof's fault. */
function verificationFailure(error: unknown): InvalidDpopProof {
  if (error instanceof errors.JWSSignatureVerificationFailed) return refuse('signature', 'has a signature that does not verify with the key in its header (jwk)');
  if (error instanceof errors.JWTExpired) return refuse('stale', 'has expired (its exp)');
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.claim === 'nbf') return refuse('future', 'is not valid yet (its nbf)');
    return refuse('claim', `has an invalid ${error.claim} claim`);
  }
  if (error instanceof errors.JWSInvalid || error instanceof errors.JWTInvalid) return refuse('malformed', 'is not a well-formed signed JWT');
  return refuse('malformed', 'could not be verified');
}

function checkTargetUri(htu: string, expectedUrl: string): void {
  const problem = htuProblem(htu);
  if (problem === 'query') throw refuse('url', 'has an htu with a query or fragment: it names the URL without them');
  if (problem !== undefined) throw refuse('url', 'has an htu that is not an http(s) URL without user information');
  const expected = normalizeTargetUri(expectedUrl);
  // The URL the request named, which the broker reads from its own issuer and the request's path:
  // one that is no URI is the request's fault, refused with the proof.
  if (expected === undefined) throw refuse('url', 'was sent with a request whose target is no URI it can name');
  if (hasDotSegment(expectedUrl)) throw refuse('url', 'was sent with a request whose path holds a dot segment (. or ..): send the path resolved');
  if (normalizeTargetUri(htu) !== expected) throw refuse('url', `is for another URL: its htu must be ${expected}`);
}
