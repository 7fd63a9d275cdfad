import type { JWTPayload } from 'jose';
import type { ActClaim } from '../shared/act.js';
import { BrokerTokenError } from './errors.js';

/** An identity acting in a delegated token (RFC 8693 section 4.1). */
export interface Actor {
  iss: string;
  sub: string;
}

export type { ActClaim } from '../shared/act.js';

export interface BrokerTokenClaims extends JWTPayload {
  sub: string;
  jti: string;
  exp: number;
  client_id: string;
  idp: string;
  scope: string;
  task_id: string;
  request_id: string;
  approvers?: { iss: string; sub: string; at: string }[];
  break_glass?: true;
  /** Present when delegated: an agent or tool acting for `sub`. */
  act?: ActClaim;
  /** Present when DPoP-bound (RFC 9449): the thumbprint of the key whose proofs must come with it. */
  cnf?: { jkt: string };
}

/** Deeper than any `delegation.maxDepth` the broker allows; a bound on what a forged token can make this walk. */
const MAX_ACTORS = 32;

/**
 * The actors of a token, the current one (the outermost `act`) first and the earliest last;
 * empty when the token is not delegated. It reads any verified JWT's claims (jose's `jwtVerify`
 * payload too). A malformed `act` is refused as `invalid`.
 */
export function actorChain(claims: JWTPayload): Actor[] {
  const actors: Actor[] = [];
  let act = claims.act;
  while (act !== undefined) {
    if (typeof act !== 'object' || act === null || Array.isArray(act)) throw malformed('act is not an object');
    const { iss, sub } = act as Record<string, unknown>;
    if (typeof iss !== 'string' || typeof sub !== 'string') throw malformed('an actor lacks iss or sub');
    if (actors.length === MAX_ACTORS) throw malformed(`more than ${MAX_ACTORS} actors`);
    actors.push({ iss, sub });
    act = (act as Record<string, unknown>).act;
  }
  return actors;
}

/**
 * The DPoP key thumbprint a token is bound to, or undefined for an unbound token. A `cnf` this
 * verifier cannot check (a certificate binding, a malformed one) is refused rather than ignored:
 * ignoring it would accept the token from anyone who holds a copy.
 */
export function boundKeyThumbprint(claims: JWTPayload): string | undefined {
  if (claims.cnf === undefined) return undefined;
  const { cnf } = claims;
  if (typeof cnf !== 'object' || cnf === null || Array.isArray(cnf) || Object.keys(cnf).length !== 1) throw malformed('cnf is not {jkt}');
  const { jkt } = cnf as Record<string, unknown>;
  if (typeof jkt !== 'string' || jkt === '') throw malformed('cnf is not {jkt}');
  return jkt;
}

const malformed = (why: string) => new BrokerTokenError('invalid', `not a valid broker token: ${why}`);
