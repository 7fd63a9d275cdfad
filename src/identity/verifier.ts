import { decodeJwt, decodeProtectedHeader, errors, jwtVerify, UnsecuredJWT, type JWTClaimVerificationOptions, type JWTPayload, type JWTVerifyGetKey, type JWTVerifyOptions, type JWTVerifyResult, type ProtectedHeaderParameters } from 'jose';
import { issuerIss, type IssuerConfig, type Role } from '../config/index.js';
import { canonicalJson } from '../shared/canonical-json.js';
import type { Clock } from '../shared/clock.js';
import { InvalidToken, type TokenRejection } from '../shared/errors.js';
import { claimsWellFormed, readClaim, writeClaim } from './claims.js';
import { KeySourceUnavailable, type IssuerRoutes, type TrustedIssuers } from './issuers.js';
import { normalizeName } from '../shared/names.js';
import type { People } from './person.js';
import type { RoleResolver } from './roles.js';
import { claimedTrustDomain, parseSpiffeId } from './spiffe.js';

/** An identity the broker has verified: who (issuer, subject), of which kind, with which roles. */
export interface Identity {
  /** The token's `iss`, exactly; for a SPIFFE issuer the configured `issuer`, else `spiffe://<trust domain>`. */
  iss: string;
  sub: string;
  /** The configured name of its issuer (`idp`, `client_id` in records and tokens). */
  idp: string;
  kind: 'workload' | 'person';
  claims: Readonly<JWTPayload>;
  roles: ReadonlySet<Role>;
  /** Person issuers with a `usernameClaim`: its value, exactly as in the token (compare `person`, not this). */
  username?: string;
  /** Workload issuers with an `initiatorClaim`: its value, exactly as in the token, the person who started the job. */
  initiator?: string;
  /**
   * The person (CONTRACT section 1, "People"), under the configuration that verified it: equal
   * values are one person for every restriction, never for a grant. Absent only for a workload
   * whose issuer has no `initiatorClaim`.
   */
  person?: string;
  /** The key records keep for that person: its name as the token gave it (see `People`). */
  personKey?: string;
  /**
   * Workload issuers with `bindClaims`: those claims' values exactly as in the token, nested as in
   * the token (`[kubernetes.io, pod, uid]` gives `{"kubernetes.io": {"pod": {"uid": ...}}}`).
   * Absent when the issuer has no `bindClaims`.
   */
  boundClaims?: Record<string, unknown>;
}

/** Two identities are the same only when issuer and subject both match. */
export const sameIdentity = (a: { iss: string; sub: string }, b: { iss: string; sub: string }): boolean =>
  a.iss === b.iss && a.sub === b.sub;

/** CONTRACT section 1: an identity token larger than this is refused unread. */
export const MAX_IDENTITY_TOKEN_BYTES = 8 * 1024;

/** The size check `verify` makes first; `jit policy test` makes it of the token a case stands for. */
export const identityTokenTooLarge = (token: string): boolean => Buffer.byteLength(token, 'utf8') > MAX_IDENTITY_TOKEN_BYTES;

/**
 * The most an identifier the broker records and indexes may take, in UTF-8 bytes: the `sub`, the
 * person key (a normalised username or initiator, or a person issuer's `sub`), and the job's bound
 * claims as canonical JSON. Several of them, with the issuer, make one index entry, which
 * PostgreSQL caps at 2,704 bytes: past that it cannot record the request (SQLite could, so the
 * engines would disagree). A `sub` of 1,024 bytes is twice what GitHub, GitLab and Kubernetes
 * produce at their longest.
 */
export const MAX_IDENTIFIER_BYTES = 1024;

/** Header members that carry or point at a key: the broker never takes a key from the token itself. */
const KEY_BEARING_HEADERS = ['jwk', 'jku', 'x5u', 'x5c'] as const;

export interface IdentityVerifier {
  /** Resolves to the verified identity, or rejects with `InvalidToken` naming the failed check. */
  verify(token: string): Promise<Identity>;
}

export interface IdentityVerifierOptions {
  issuers: TrustedIssuers;
  roles: RoleResolver;
  /** `createPeople(config)`: who the person behind each identity is. */
  people: People;
  clockSkewMs: number;
  clock: Clock;
}

export function createIdentityVerifier(options: IdentityVerifierOptions): IdentityVerifier {
  const skewSeconds = Math.ceil(options.clockSkewMs / 1000);

  return {
    async verify(token) {
      if (identityTokenTooLarge(token)) throw new InvalidToken('too_large');

      const header = readHeader(token);
      if (isAccessTokenType(header.typ)) throw new InvalidToken('access_token_as_identity');
      const keyHeader = KEY_BEARING_HEADERS.find((name) => name in header);
      if (keyHeader) throw new InvalidToken('embedded_key', { header: keyHeader });

      const issuer = findIssuer(options.issuers, readUnverifiedClaims(token));
      const config = issuer.config;
      const iss = issuerIss(config);
      if (typeof header.alg !== 'string' || !config.algorithms.includes(header.alg)) {
        throw new InvalidToken('algorithm', { iss, alg: header.alg });
      }

      const now = options.clock();
      let payload: JWTPayload;
      try {
        ({ payload } = await verifySigned(token, issuer.keys, { ...claimChecks(config, skewSeconds, now), algorithms: config.algorithms }));
      } catch (error) {
        throw new InvalidToken(rejectionFor(error), { iss, kid: header.kid, reason: (error as Error).message });
      }
      checkTimes(config, payload, now, skewSeconds, header.kid);
      return identityFromClaims(config, payload, options);
    },
  };
}

/**
 * `jwtVerify` over an issuer's key set, where a token that names no `kid` may fit several keys of
 * its `alg` (an issuer mid-rotation publishes two): it is the issuer's when one of them verifies
 * it, as the contract reads "its signature does not verify against that issuer's keys". jose only
 * says that several keys fit; each is tried here in turn (a fetched set holds at most `JWKS_MAX_KEYS`).
 */
async function verifySigned(token: string, keys: JWTVerifyGetKey, options: JWTVerifyOptions): Promise<JWTVerifyResult> {
  try {
    return await jwtVerify(token, keys, options);
  } catch (error) {
    if (!(error instanceof errors.JWKSMultipleMatchingKeys)) throw error;
    for await (const key of error) {
      try {
        return await jwtVerify(token, key, options);
      } catch (tried) {
        // Another key's signature: try the next. Any other failure (its claims) is the token's.
        if (!(tried instanceof errors.JWSSignatureVerificationFailed)) throw tried;
      }
    }
    throw new errors.JWSSignatureVerificationFailed();
  }
}

/** What jose checks of a token's claims for this issuer, besides its signature. */
function claimChecks(config: IssuerConfig, skewSeconds: number, now: number): JWTClaimVerificationOptions {
  return {
    // A JWT-SVID's `iss` is optional; findIssuer has judged it already.
    ...(config.spiffeTrustDomain === undefined ? { issuer: config.issuer as string } : {}),
    audience: config.audiences,
    clockTolerance: skewSeconds,
    currentDate: new Date(now),
    requiredClaims: ['sub', 'exp', ...(config.maxTokenAge !== undefined ? ['iat'] : [])],
  };
}

/** The times as the contract judges them where jose does not. Throws `InvalidToken`. */
function checkTimes(config: IssuerConfig, payload: JWTPayload, now: number, skewSeconds: number, kid?: string): void {
  const iss = issuerIss(config);
  // The skew forgives a `nbf` or `iat` a little ahead of this clock, never an `exp` behind it
  // (CONTRACT section 1: "it is expired"): jose's tolerance covers both, so `exp` is judged here.
  if ((payload.exp as number) <= Math.floor(now / 1000)) throw new InvalidToken('expired', { iss, kid });
  // jose judges `iat` only for its own maxTokenAge, which is not used: the contract refuses a future `iat` always.
  if (typeof payload.iat === 'number' && payload.iat > Math.floor(now / 1000) + skewSeconds) {
    throw new InvalidToken('issued_in_future', { iss });
  }
  // maxTokenAge is checked here, not by jose, which would stretch it by clockSkew: the skew
  // forgives clocks that disagree, not a token older than the issuer's limit.
  if (config.maxTokenAge !== undefined && typeof payload.iat === 'number' && Math.floor(now / 1000) - payload.iat > config.maxTokenAge / 1000) {
    throw new InvalidToken('too_old', { iss });
  }
}

/**
 * The checks `verify` makes of a token's claims once its signature holds (jose's, then the
 * times), made of claims nobody signed: `jit policy test` judges a case's token by them, so a
 * case's `aud`, `nbf` or `iat` meets the very checks a token's does. Throws `InvalidToken`.
 */
export function checkUnsignedClaims(config: IssuerConfig, payload: JWTPayload, now: number, clockSkewMs: number): void {
  const skewSeconds = Math.ceil(clockSkewMs / 1000);
  try {
    UnsecuredJWT.decode(new UnsecuredJWT(payload).encode(), claimChecks(config, skewSeconds, now));
  } catch (error) {
    throw new InvalidToken(rejectionFor(error), { iss: issuerIss(config), reason: (error as Error).message });
  }
  checkTimes(config, payload, now, skewSeconds);
}

/**
 * Who a token's claims make its holder, once its signature and its times have been checked: the
 * checks on the claims themselves (well-formed text, a `sub`, the issuer's `requiredClaims`,
 * `usernameClaim`, `initiatorClaim` and `bindClaims`), then its roles and its person. Pure, so
 * `jit policy test` judges a case's claims with the very checks a token meets. Throws
 * `InvalidToken` naming the failed check.
 */
export function identityFromClaims(config: IssuerConfig, payload: JWTPayload, resolve: Pick<IdentityVerifierOptions, 'roles' | 'people'>): Identity {
  const iss = issuerIss(config);
  // Before any claim is read as text: a lone surrogate has no one meaning to compare.
  if (!claimsWellFormed(payload)) throw new InvalidToken('invalid_claim', { iss, reason: 'a claim is not well-formed Unicode, or holds NUL' });
  if (typeof payload.sub !== 'string' || payload.sub === '') throw new InvalidToken('missing_claim', { claim: 'sub' });
  // RFC 8693 section 4.1: `act` says someone else acts for the subject. Taken as the subject's own
  // token, it would give that actor every scope of the subject, past every delegation rule, and
  // leave it out of the records: an actor presents its own identity as the `actor_token`.
  if (Object.hasOwn(payload, 'act')) throw new InvalidToken('invalid_claim', { iss, claim: 'act', reason: 'a token naming an actor is not an identity of its own' });
  // RFC 7800: `cnf` binds a token to a key (RFC 9449 DPoP's `jkt`, RFC 8705 mTLS's `x5t#S256`),
  // and only whoever proves that key may use it. The broker takes an identity as a bearer token
  // and checks no such proof, so a copy of a bound token would pass for its holder: refused, as a
  // resource server refuses a bound token sent as Bearer (RFC 9449 section 7.2).
  if (Object.hasOwn(payload, 'cnf')) throw new InvalidToken('invalid_claim', { iss, claim: 'cnf', reason: 'a token bound to a key (cnf) is its key holder\'s only, and no proof of that key is checked here' });
  // jose checks only top-level names, and only that they are there; a null or empty value carries nothing either.
  const missing = config.requiredClaims.find((path) => isAbsent(readClaim(payload, path)));
  if (missing !== undefined) throw new InvalidToken('missing_claim', { claim: missing });

  const username = nameClaim(config.usernameClaim, payload);
  const initiator = nameClaim(config.initiatorClaim, payload);
  const boundClaims = config.bindClaims === undefined ? undefined : bindClaims(config.bindClaims, payload);
  const identity = { iss, sub: payload.sub, idp: config.name, kind: config.kind, claims: payload };
  const personKey = resolve.people.keyOf({ ...identity, username, initiator });
  const tooLong = (
    [
      ['sub', payload.sub],
      ['the person key (its username or initiator, normalised)', personKey],
      ['the bound claims', boundClaims === undefined ? undefined : canonicalJson(boundClaims)],
    ] as const
  ).find(([, value]) => value !== undefined && Buffer.byteLength(value, 'utf8') > MAX_IDENTIFIER_BYTES);
  if (tooLong) throw new InvalidToken('invalid_claim', { iss, reason: `${tooLong[0]} is longer than ${MAX_IDENTIFIER_BYTES} bytes` });
  return {
    ...identity,
    roles: resolve.roles(identity),
    ...(username !== undefined ? { username } : {}),
    ...(initiator !== undefined ? { initiator } : {}),
    ...(personKey !== undefined ? { personKey, person: resolve.people.personOf(personKey) } : {}),
    ...(boundClaims !== undefined ? { boundClaims } : {}),
  };
}

/**
 * The issuer a token is for, judged on claims not yet verified: the signature, checked next with
 * this issuer's keys, vouches for the very same claims. A `sub` naming a configured SPIFFE trust
 * domain routes the token to that issuer (a JWT-SVID may have no `iss`), in any spelling, so
 * that a malformed SPIFFE ID is refused there rather than taken for something else; any other
 * token goes by its exact `iss`. A SPIFFE issuer takes only JWT-SVIDs of its own trust domain,
 * whose `iss`, when present, is its configured `issuer` (none configured: no `iss` at all).
 * Pure, so `jit policy test` routes a case's claims as a token's are routed. Throws `InvalidToken`.
 */
export function findIssuer<T extends { config: IssuerConfig }>(issuers: IssuerRoutes<T>, claims: JWTPayload): T {
  const domain = typeof claims.sub === 'string' ? claimedTrustDomain(claims.sub) : undefined;
  const spiffe = domain === undefined ? undefined : issuers.byTrustDomain.get(domain);
  const issuer = spiffe ?? (typeof claims.iss === 'string' ? issuers.byIss.get(claims.iss) : undefined);
  if (!issuer) throw new InvalidToken('unknown_issuer', { iss: claims.iss });
  const { spiffeTrustDomain: trustDomain, issuer: iss } = issuer.config;
  if (trustDomain !== undefined) {
    const id = typeof claims.sub === 'string' ? parseSpiffeId(claims.sub) : undefined;
    if (id?.trustDomain !== trustDomain) throw new InvalidToken('invalid_claim', { claim: 'sub', reason: `not a SPIFFE ID in ${trustDomain}` });
    if (Object.hasOwn(claims, 'iss') && claims.iss !== iss) throw new InvalidToken('unknown_issuer', { iss: claims.iss, trustDomain });
  }
  return issuer;
}

const isAbsent = (value: unknown) => value === undefined || value === null || value === '';

/**
 * A `usernameClaim` or `initiatorClaim` value. When the issuer names the claim, the claim is
 * required: fail closed, or leaving it out of a token would make its holder nobody, or someone
 * else, to every separation rule. A value with nothing left once normalised names no one either.
 */
function nameClaim(claim: string | undefined, payload: JWTPayload): string | undefined {
  if (claim === undefined) return undefined;
  const value = readClaim(payload, claim);
  if (isAbsent(value)) throw new InvalidToken('missing_claim', { claim });
  if (typeof value !== 'string') throw new InvalidToken('invalid_claim', { claim, reason: 'not a string' });
  if (normalizeName(value) === '') throw new InvalidToken('invalid_claim', { claim, reason: 'nothing left once normalised' });
  return value;
}

/**
 * The `bindClaims` values, as in the token: each required, and a string, number or boolean. A
 * number must be an integer parsing keeps exact (at most 2^53 - 1 either way): past it, or with
 * a fraction, two values in two tokens may parse to one, and two jobs would be one.
 */
function bindClaims(paths: readonly (string | string[])[], payload: JWTPayload): Record<string, unknown> {
  const bound: Record<string, unknown> = {};
  for (const path of paths) {
    const value = readClaim(payload, path);
    if (isAbsent(value)) throw new InvalidToken('missing_claim', { claim: path });
    if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') {
      throw new InvalidToken('invalid_claim', { claim: path, reason: 'not a string, number or boolean' });
    }
    if (typeof value === 'number' && !Number.isSafeInteger(value)) {
      throw new InvalidToken('invalid_claim', { claim: path, reason: 'a number parsing may change (a fraction, or past 2^53 - 1)' });
    }
    writeClaim(bound, path, value);
  }
  return bound;
}

function readHeader(token: string): ProtectedHeaderParameters {
  try {
    return decodeProtectedHeader(token);
  } catch {
    throw new InvalidToken('malformed');
  }
}

/** The claims before the signature is checked: only to find whose keys check it. */
function readUnverifiedClaims(token: string): JWTPayload {
  try {
    return decodeJwt(token);
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
