import { decodeJwt, decodeProtectedHeader, errors, jwtVerify, type JWTPayload, type ProtectedHeaderParameters } from 'jose';
import type { Role } from '../config/index.js';
import type { Clock } from '../shared/clock.js';
import { InvalidToken, type TokenRejection } from '../shared/errors.js';
import { KeySourceUnavailable, type TrustedIssuer } from './issuers.js';
import type { RoleResolver } from './roles.js';

/** An identity the broker has verified: who (issuer, subject), of which kind, with which roles. */
export interface Identity {
  /** The token's `iss`, exactly. */
  iss: string;
  sub: string;
  /** The configured name of its issuer (`idp`, `client_id` in records and tokens). */
  idp: string;
  kind: 'workload' | 'person';
  claims: Readonly<JWTPayload>;
  roles: ReadonlySet<Role>;
  /** Person issuers: the `usernameClaim` value. */
  username?: string;
  /** Workload issuers: the `initiatorClaim` value, the person who started the job. */
  initiator?: string;
  /** The person key (CONTRACT section 1, "People"); absent for a workload that names no initiator. */
  person?: string;
  /** The `bindClaims` values, nested as in the token; present only when the issuer binds jobs. */
  boundClaims?: Record<string, unknown>;
}

/** Two identities are the same only when issuer and subject both match. */
export const sameIdentity = (a: { iss: string; sub: string }, b: { iss: string; sub: string }): boolean =>
  a.iss === b.iss && a.sub === b.sub;

/** CONTRACT section 1: an identity token larger than this is refused unread. */
export const MAX_IDENTITY_TOKEN_BYTES = 8 * 1024;

/** Header members that carry or point at a key: the broker never takes a key from the token itself. */
const KEY_BEARING_HEADERS = ['jwk', 'jku', 'x5u', 'x5c'] as const;

export interface IdentityVerifier {
  /** Resolves to the verified identity, or rejects with `InvalidToken` naming the failed check. */
  verify(token: string): Promise<Identity>;
}

export interface IdentityVerifierOptions {
  issuers: ReadonlyMap<string, TrustedIssuer>;
  roles: RoleResolver;
  clockSkewMs: number;
  clock: Clock;
}

export function createIdentityVerifier(options: IdentityVerifierOptions): IdentityVerifier {
  const skewSeconds = Math.ceil(options.clockSkewMs / 1000);

  return {
    async verify(token) {
      if (Buffer.byteLength(token, 'utf8') > MAX_IDENTITY_TOKEN_BYTES) throw new InvalidToken('too_large');

      const header = readHeader(token);
      if (isAccessTokenType(header.typ)) throw new InvalidToken('access_token_as_identity');
      const keyHeader = KEY_BEARING_HEADERS.find((name) => name in header);
      if (keyHeader) throw new InvalidToken('embedded_key', { header: keyHeader });

      const claimedIssuer = readUnverifiedIssuer(token);
      const issuer = claimedIssuer === undefined ? undefined : options.issuers.get(claimedIssuer);
      if (!issuer) throw new InvalidToken('unknown_issuer', { iss: claimedIssuer });
      const config = issuer.config;
      if (typeof header.alg !== 'string' || !config.algorithms.includes(header.alg)) {
        throw new InvalidToken('algorithm', { iss: config.issuer, alg: header.alg });
      }

      const now = options.clock();
      let payload: JWTPayload;
      try {
        ({ payload } = await jwtVerify(token, issuer.keys, {
          issuer: config.issuer,
          audience: config.audiences,
          algorithms: config.algorithms,
          clockTolerance: skewSeconds,
          currentDate: new Date(now),
          requiredClaims: ['sub', 'exp', ...(config.maxTokenAge !== undefined ? ['iat'] : []), ...config.requiredClaims],
        }));
      } catch (error) {
        throw new InvalidToken(rejectionFor(error), { iss: config.issuer, kid: header.kid, reason: (error as Error).message });
      }

      // jose judges `iat` only for its own maxTokenAge, which is not used: the contract refuses a future `iat` always.
      if (typeof payload.iat === 'number' && payload.iat > Math.floor(now / 1000) + skewSeconds) {
        throw new InvalidToken('issued_in_future', { iss: config.issuer });
      }
      if (typeof payload.sub !== 'string' || payload.sub === '') throw new InvalidToken('missing_claim', { claim: 'sub' });
      // jose checks only that the name is there; a null or empty value carries nothing either.
      const empty = config.requiredClaims.find((claim) => payload[claim] === null || payload[claim] === '');
      if (empty !== undefined) throw new InvalidToken('missing_claim', { claim: empty });
      // maxTokenAge is checked here, not by jose, which would stretch it by clockSkew: the skew
      // forgives clocks that disagree, not a token older than the issuer's limit.
      if (config.maxTokenAge !== undefined && Math.floor(now / 1000) - (payload.iat as number) > config.maxTokenAge / 1000) {
        throw new InvalidToken('too_old', { iss: config.issuer });
      }

      const identity = {
        iss: config.issuer,
        sub: payload.sub,
        idp: config.name,
        kind: config.kind,
        claims: payload,
      };
      return {
        ...identity,
        roles: options.roles({ ...identity, claims: payload }),
        ...stringClaim('username', config.usernameClaim, payload),
        ...stringClaim('initiator', config.initiatorClaim, payload),
      };
    },
  };
}

function readHeader(token: string): ProtectedHeaderParameters {
  try {
    return decodeProtectedHeader(token);
  } catch {
    throw new InvalidToken('malformed');
  }
}

function readUnverifiedIssuer(token: string): string | undefined {
  try {
    const { iss } = decodeJwt(token);
    return typeof iss === 'string' ? iss : undefined;
  } catch {
    throw new InvalidToken('malformed');
  }
}

/** RFC 9068 section 2.1: `at+jwt`, or its full media type; a broker-minted token is never an identity. */
function isAccessTokenType(typ: unknown): boolean {
  if (typeof typ !== 'string') return false;
  const type = typ.toLowerCase();
  return type === 'at+jwt' || type === 'application/at+jwt';
}

function stringClaim<K extends string>(key: K, claim: string | undefined, payload: JWTPayload): { [P in K]?: string } {
  if (claim === undefined) return {};
  const value = payload[claim];
  return typeof value === 'string' && value !== '' ? ({ [key]: value } as { [P in K]: string }) : {};
}

function rejectionFor(error: unknown): TokenRejection {
  if (error instanceof KeySourceUnavailable) return 'jwks_unavailable';
  if (error instanceof errors.JWTExpired) return 'expired';
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.reason === 'missing') return 'missing_claim';
    if (error.claim === 'aud') return 'audience';
    if (error.claim === 'nbf') return 'not_yet_valid';
    if (error.claim === 'iat') return 'issued_in_future';
    if (error.claim === 'iss') return 'unknown_issuer';
    return 'invalid_claim';
  }
  if (error instanceof errors.JOSEAlgNotAllowed || error instanceof errors.JOSENotSupported) return 'algorithm';
  if (error instanceof errors.JWSSignatureVerificationFailed) return 'signature';
  if (error instanceof errors.JWKSNoMatchingKey || error instanceof errors.JWKSMultipleMatchingKeys) return 'unknown_key';
  return 'malformed';
}
