import { createHash } from 'node:crypto';
import { errors, jwtVerify, type JWTPayload } from 'jose';
import { brokerKeys, KeysUnavailable } from './jwks.js';

/**
 * Verifies the broker's access tokens where they are used: in a resource server, offline,
 * against the broker's JWKS, with an optional check against revocation. Import it as
 * `jit-broker/verifier`. It depends on jose alone.
 */

export type BrokerTokenErrorCode =
  | 'invalid' // not a broker token: bad signature, wrong issuer or type, malformed
  | 'expired'
  | 'audience'
  | 'scope'
  | 'approvals'
  | 'break_glass'
  | 'revoked'
  | 'unavailable'; // the JWKS or the revocation check could not be reached: refused, fail closed

export class BrokerTokenError extends Error {
  constructor(
    readonly code: BrokerTokenErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'BrokerTokenError';
  }
}

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
}

export interface RevocationCheck {
  /**
   * `introspect` asks the broker about each token (RFC 7662; freshest, one call per token per
   * cache period); `list` keeps the broker's list of revoked tokens (one call per cache period).
   */
  mode: 'introspect' | 'list';
  /** The resource server's own identity token, holding the broker's `introspector` role. */
  identityToken: () => string | Promise<string>;
  /** How long an answer is reused (default 10 s): the most a revocation can go unseen. */
  cacheMs?: number;
}

export interface BrokerVerifierOptions {
  /** The broker's `issuer`, exactly. */
  issuer: string;
  /** This resource server: the token's `aud` must be it. */
  audience: string;
  /** Where to reach the broker, when not at its issuer URL (an internal address). Default: `issuer`. */
  brokerUrl?: string;
  /** Default `${brokerUrl}/.well-known/jwks.json`. */
  jwksUri?: string;
  /** Leeway for `exp` and `nbf`, seconds (default 30). */
  clockToleranceSeconds?: number;
  /**
   * The longest the JWKS is kept (default 10 minutes); within that, as long as the broker's
   * `Cache-Control: max-age` says, which is never longer than it publishes new keys ahead.
   */
  jwksMaxAgeMs?: number;
  /** A token naming a key the cached JWKS lacks fetches it again, at most once this often (default 30 s). */
  jwksCooldownMs?: number;
  revocation?: RevocationCheck;
  fetch?: typeof fetch;
  /** For tests: the current time. */
  now?: () => number;
}

export interface VerifyRequirements {
  /** Every one of these must be in the token's `scope`. */
  requiredScopes?: readonly string[];
  /** At least this many approvers (true: at least one). */
  requireApprovals?: boolean | number;
  /** Refuse break-glass tokens here (default: accepted; they are legitimate, and audited). */
  refuseBreakGlass?: boolean;
}

export interface BrokerVerifier {
  /** Resolves to the token's claims, or rejects with a `BrokerTokenError` saying why not. */
  verify(token: string, requirements?: VerifyRequirements): Promise<BrokerTokenClaims>;
}

export function createBrokerVerifier(options: BrokerVerifierOptions): BrokerVerifier {
  const base = (options.brokerUrl ?? options.issuer).replace(/\/+$/, '');
  const fetchImpl = options.fetch ?? fetch;
  const now = options.now ?? Date.now;
  const jwks = brokerKeys({
    url: options.jwksUri ?? `${base}/.well-known/jwks.json`,
    fetch: fetchImpl,
    now,
    maxAgeMs: options.jwksMaxAgeMs ?? 10 * 60_000,
    cooldownMs: options.jwksCooldownMs ?? 30_000,
    timeoutMs: 5_000,
  });
  const isRevoked = options.revocation ? revocationCheck(base, options.revocation, fetchImpl, now) : undefined;

  return {
    async verify(token, requirements = {}) {
      let claims: BrokerTokenClaims;
      try {
        ({ payload: claims } = (await jwtVerify(token, jwks, {
          issuer: options.issuer,
          audience: options.audience,
          typ: 'at+jwt',
          algorithms: ['ES256', 'EdDSA', 'RS256'],
          clockTolerance: options.clockToleranceSeconds ?? 30,
          currentDate: new Date(now()),
          requiredClaims: ['sub', 'jti', 'exp', 'scope'],
        })) as unknown as { payload: BrokerTokenClaims });
      } catch (error) {
        throw refusal(error);
      }

      const scopes = new Set(claims.scope.split(' '));
      const missing = (requirements.requiredScopes ?? []).filter((scope) => !scopes.has(scope));
      if (missing.length > 0) throw new BrokerTokenError('scope', `token lacks scope ${missing.join(', ')}`);
      const approvals = requirements.requireApprovals === true ? 1 : Number(requirements.requireApprovals ?? 0);
      if ((claims.approvers?.length ?? 0) < approvals) {
        throw new BrokerTokenError('approvals', `token carries ${claims.approvers?.length ?? 0} approvals, ${approvals} needed`);
      }
      if (requirements.refuseBreakGlass && claims.break_glass) throw new BrokerTokenError('break_glass', 'break-glass tokens are refused here');
      if (isRevoked && (await isRevoked(token, claims))) throw new BrokerTokenError('revoked', 'token was revoked');
      return claims;
    },
  };
}

/** One-call convenience over a verifier kept per (issuer, audience, jwksUri). */
const verifiers = new Map<string, BrokerVerifier>();
export function verifyBrokerToken(
  token: string,
  options: Omit<BrokerVerifierOptions, 'fetch' | 'now'> & VerifyRequirements,
): Promise<BrokerTokenClaims> {
  const { requiredScopes, requireApprovals, refuseBreakGlass, ...verifierOptions } = options;
  const key = JSON.stringify([
    options.issuer,
    options.audience,
    options.brokerUrl ?? null,
    options.jwksUri ?? null,
    options.revocation?.mode ?? null,
    options.clockToleranceSeconds ?? null,
  ]);
  let verifier = verifiers.get(key);
  if (!verifier) {
    verifier = createBrokerVerifier(verifierOptions);
    verifiers.set(key, verifier);
  }
  return verifier.verify(token, {
    ...(requiredScopes ? { requiredScopes } : {}),
    ...(requireApprovals !== undefined ? { requireApprovals } : {}),
    ...(refuseBreakGlass !== undefined ? { refuseBreakGlass } : {}),
  });
}

function refusal(error: unknown): BrokerTokenError {
  if (error instanceof errors.JWTExpired) return new BrokerTokenError('expired', 'token has expired', { cause: error });
  if (error instanceof errors.JWTClaimValidationFailed && error.claim === 'aud') {
    return new BrokerTokenError('audience', 'token is for another audience', { cause: error });
  }
  if (error instanceof KeysUnavailable || error instanceof errors.JWKSTimeout || (error instanceof Error && !(error instanceof errors.JOSEError))) {
    return new BrokerTokenError('unavailable', 'broker keys could not be fetched', { cause: error });
  }
  return new BrokerTokenError('invalid', 'not a valid broker token', { cause: error });
}

/** Fails closed: when the broker cannot be asked, the token is not accepted. */
function revocationCheck(base: string, check: RevocationCheck, fetchImpl: typeof fetch, now: () => number) {
  const cacheMs = check.cacheMs ?? 10_000;
  const call = async (path: string, init: RequestInit = {}) => {
    let response: Response;
    try {
      response = await fetchImpl(`${base}${path}`, {
        ...init,
        headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${await check.identityToken()}` },
        signal: AbortSignal.timeout(5_000),
      });
    } catch (error) {
      throw new BrokerTokenError('unavailable', 'the broker could not be asked about revocation', { cause: error });
    }
    if (!response.ok) throw new BrokerTokenError('unavailable', `the broker answered ${response.status} about revocation`);
    return response.json() as Promise<Record<string, unknown>>;
  };

  if (check.mode === 'introspect') {
    const answers = new Map<string, { active: boolean; at: number }>();
    return async (token: string) => {
      const key = createHash('sha256').update(token).digest('hex');
      const cached = answers.get(key);
      if (cached && now() - cached.at < cacheMs) return !cached.active;
      const body = await call('/oauth2/introspect', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token }).toString(),
      });
      answers.set(key, { active: body.active === true, at: now() });
      for (const [k, v] of answers) if (now() - v.at >= cacheMs) answers.delete(k);
      return body.active !== true;
    };
  }

  let list: { jtis: Set<string>; at: number } | undefined;
  return async (_token: string, claims: BrokerTokenClaims) => {
    if (!list || now() - list.at >= cacheMs) {
      const jtis = new Set<string>();
      let cursor: string | null = null;
      do {
        const page: Record<string, unknown> = await call(`/v1/revocations?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
        for (const item of page.items as { jti: string }[]) jtis.add(item.jti);
        cursor = page.next_cursor as string | null;
      } while (cursor);
      list = { jtis, at: now() };
    }
    return list.jtis.has(claims.jti);
  };
}
