import type { JWTPayload } from 'jose';
import { z } from 'zod';
import { planDelegated, planPlain, type Binding, type CredentialInput } from '../credentials/index.js';
import { checkUnsignedClaims, findIssuer, identityFromClaims, identityTokenTooLarge, issuerRoutes, MAX_IDENTITY_TOKEN_BYTES, type Identity } from '../identity/index.js';
import type { ASYMMETRIC_ALGORITHMS } from '../shared/algorithms.js';
import type { Rules } from '../settings/index.js';
import { BrokerError, InvalidRequest, InvalidToken } from '../shared/errors.js';
import { requestText as text } from '../shared/text-schemas.js';
import { detailsWithinBound } from '../shared/authorization-details.js';
import { malformedText } from '../shared/well-formed.js';
import type { CaseIdentity, CaseRequest, Outcome } from './cases.js';

/**
 * One case judged by the broker's own rules: the identity by the verifier's routing and claim
 * checks (`findIssuer`, `identityFromClaims`), the request's text by the API's own schemas, the
 * request by the credential service's planning (`planPlain`, `planDelegated`: DPoP requirement,
 * policies, delegation rules, separation, duties, a break-glass quota of 0). What needs history
 * (toxic combinations with live grants, duty steps taken earlier, other quotas and limits) is not
 * judged here: a case is one request on its own.
 */

/**
 * What the broker would answer: an outcome a case may expect, or 429 `rate_limited`, which the
 * configuration alone gives break-glass under a `maxPerIdentityPerDay` of 0. No case expects
 * that one (CONTRACT section 7 lists none): a case that meets it fails, saying why.
 */
export type Answer = Outcome | 'rate_limited';

/** What the broker would answer. */
export interface CaseOutcome {
  outcome: Answer;
  /** Granting outcomes: approvals by distinct people still needed (0 when issued). */
  approvalsRequired?: number;
  /** Granting outcomes: the effective lifetime. */
  ttlSeconds?: number;
  /** A refusal: why, as the broker says it (for an identity, which check failed). */
  detail?: string;
}

/** A request stated as a case: who, which agent if any, and what. */
export interface CaseAsk {
  identity: CaseIdentity;
  actor?: CaseIdentity | undefined;
  request: CaseRequest;
}

/** The binding a case's `dpop: true` stands for: a valid proof was presented (no key is involved). */
const PROVEN: Binding = { jkt: 'policy-test', proof: { jti: 'policy-test', expiresAt: 0 } };

/** Judges one case; never throws for a refusal (a refusal is an outcome). */
export function evaluateCase(rules: Rules, ask: CaseAsk): CaseOutcome {
  try {
    const identity = caseIdentity(rules, ask.identity, 'identity');
    const actor = ask.actor && caseIdentity(rules, ask.actor, 'actor');
    checkRequestText(ask.request);
    const input = credentialInput(ask.request);
    const binding = ask.request.dpop ? PROVEN : undefined;
    const { decision } = actor ? planDelegated(rules, identity, actor, input, binding) : planPlain(rules, identity, input, binding);
    return {
      outcome: decision.approvalsRequired > 0 ? 'pending_approval' : 'issued',
      approvalsRequired: decision.approvalsRequired,
      ttlSeconds: decision.ttlSeconds,
    };
  } catch (error) {
    if (error instanceof CaseIdentityRefused) return { outcome: 'invalid_token', detail: error.message };
    if (error instanceof BrokerError && isAnswer(error.type)) return { outcome: error.type, detail: error.detail };
    throw error;
  }
}

const detailList = z.array(text.detailValue).optional();

/**
 * A request's text as the API reads it: `POST /v1/credentials` and the token exchange take the
 * audience, the justification and the `authorization_details` members with these very schemas
 * (`requestText`), after refusing text that is not well-formed. The cases file reads text
 * leniently, so that a case may state such a request and expect the broker's 400.
 */
const requestText = z.object({
  audience: text.audience,
  justification: text.justification.optional(),
  authorization_details: z
    .array(z.object({ identifier: text.detailValue.optional(), actions: detailList, locations: detailList, datatypes: detailList, privileges: detailList }))
    .refine(...detailsWithinBound)
    .optional(),
});

/** Throws the 400 `invalid_request` the API answers a request's text with, naming each field as it does. */
function checkRequestText(request: CaseRequest): void {
  const malformed = malformedText(request);
  const issues = malformed ? [{ path: malformed.path, message: malformed.detail }] : (requestText.safeParse(request).error?.issues ?? []);
  if (issues.length > 0) throw new InvalidRequest(`Invalid body: ${issues.map(({ path, message }) => `${path.map(String).join('/')}: ${message}`).join('; ')}`);
}

/** The request a case states, as the credential service takes it. */
export const credentialInput = (request: CaseRequest): CredentialInput => ({
  taskId: 'policy-test',
  scopes: request.scopes,
  audience: request.audience,
  ttlSeconds: request.ttl_seconds,
  justification: request.justification,
  breakGlass: request.break_glass,
  authorizationDetails: request.authorization_details,
});

/** An identity the verifier would refuse, saying which check failed (the broker tells only its log). */
export class CaseIdentityRefused extends Error {}

/**
 * The identity a case's claims make, by the verifier's own checks short of the signature: routed
 * to an issuer as a token is (`findIssuer`: a SPIFFE ID's trust domain, else `iss`), its claims
 * and times checked as once the signature holds (`checkUnsignedClaims`), then its claims
 * (`identityFromClaims`). The issuer is named as configured, and the token carries what every
 * token the broker verifies from it must: its `issuer` as `iss` (none for a SPIFFE issuer without
 * one), an `exp` ahead, an `iat` of now where `maxTokenAge` needs one; and the case's claims
 * (`nbf`, or `iat` elsewhere, only when the case states them), its first audience as `aud`
 * unless they give one.
 */
export function caseIdentity(rules: Pick<Rules, 'config' | 'roles' | 'people'>, given: CaseIdentity, as: 'identity' | 'actor'): Identity {
  const issuers = rules.config.identity.issuers;
  const issuer = issuers.find((candidate) => candidate.name === given.issuer);
  if (!issuer) throw new CaseIdentityRefused(`the ${as}'s issuer "${given.issuer}" is not configured`);
  // Only what a token must carry to be verified at all: a claim the broker could do without (`nbf`,
  // an `iat` no maxTokenAge needs) a live token may lack, so requiredClaims or a match naming it
  // holds only when the case states it, and what the case states is judged as a token's would be.
  const nowMs = Date.now();
  const now = Math.floor(nowMs / 1000);
  const claims: JWTPayload = {
    // A case's own `aud` is judged as a token's: one naming none of the issuer's audiences is refused.
    aud: issuer.audiences[0],
    exp: now + 300,
    ...(issuer.maxTokenAge !== undefined ? { iat: now } : {}),
    ...given.claims,
    ...(issuer.issuer !== undefined ? { iss: issuer.issuer } : {}),
    sub: given.subject,
  };
  const refused = (what: string) => new CaseIdentityRefused(`the ${as} would be refused (401): ${what}`);
  // The broker measures the whole token, header and signature too, before it reads anything.
  if (identityTokenTooLarge(smallestToken(issuer.algorithms, claims))) throw refused(`too large (a token over ${MAX_IDENTITY_TOKEN_BYTES} bytes)`);
  try {
    const routed = findIssuer(issuerRoutes(issuers.map((config) => ({ config }))), claims);
    // Another issuer's keys check the token there, and they do not sign this one's (an `iss` of its own stops most such tokens in findIssuer already).
    if (routed.config !== issuer) throw refused(`its subject takes the token to issuer "${routed.config.name}", whose keys do not sign ${issuer.name}'s tokens`);
    checkUnsignedClaims(issuer, claims, nowMs, rules.config.clockSkew);
    return identityFromClaims(issuer, claims, rules);
  } catch (error) {
    if (!(error instanceof InvalidToken)) throw error;
    const { rejection, claim, reason, trustDomain } = error.internal as { rejection: string; claim?: unknown; reason?: string; trustDomain?: string };
    const named = claim === undefined ? '' : ` ${Array.isArray(claim) ? `[${claim.join(', ')}]` : String(claim)}`;
    const why = reason ?? (trustDomain === undefined ? undefined : `its subject takes the token to the issuer of trust domain ${trustDomain}`);
    throw refused(`${rejection.replaceAll('_', ' ')}${named}${why ? ` (${why})` : ''}`);
  }
}

/**
 * A signature's length in base64url, at its shortest, by algorithm (RSA: jose verifies with no
 * key under 2,048 bits; EdDSA: Ed25519).
 */
const SIGNATURE_CHARS: Record<(typeof ASYMMETRIC_ALGORITHMS)[number], number> = {
  RS256: 342, RS384: 342, RS512: 342, PS256: 342, PS384: 342, PS512: 342,
  ES256: 86, ES384: 128, ES512: 176, EdDSA: 86, Ed25519: 86,
};

/**
 * The shortest token an issuer could sign with these claims: a header of `alg` alone and the
 * shortest signature its algorithms make. A real one (a `kid`, a `typ`) is longer still, so a case
 * refused for it is refused live, whatever the issuer puts in its header.
 */
function smallestToken(algorithms: readonly string[], claims: JWTPayload): string {
  const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const signed = algorithms.map((alg) => `${encode({ alg })}.${encode(claims)}.${'A'.repeat(SIGNATURE_CHARS[alg as keyof typeof SIGNATURE_CHARS])}`);
  return signed.reduce((shortest, token) => (token.length < shortest.length ? token : shortest));
}

const isAnswer = (type: string): type is Answer => type === 'policy_denied' || type === 'separation_of_duties' || type === 'invalid_request' || type === 'rate_limited';
