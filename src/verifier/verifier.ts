import { createHash } from 'node:crypto';
import { errors, jwtVerify } from 'jose';
import { DPOP_SIGNING_ALGORITHMS, singleDpopProof, verifyDpopProof, type VerifiedDpopProof } from '../dpop/index.js';
import { InvalidDpopProof } from '../shared/errors.js';
import { isSecureOrLoopback } from '../shared/loopback.js';
import { readBoundedJson } from './bounded-json.js';
import { actorChain, boundKeyThumbprint, type BrokerTokenClaims } from './claims.js';
import { BrokerTokenError } from './errors.js';
import { brokerKeys, KeysUnavailable } from './jwks.js';
import { createProofReplayCache } from './replay-cache.js';

/**
 * Verifies the broker's access tokens where they are used: in a resource server, offline,
 * against the broker's JWKS, with an optional check against revocation, and, for a DPoP-bound
 * token, with the proof of the request it came with. Import it as `jit-broker/verifier`. It
 * depends on jose and the broker's own `dpop/` rules (built beside it in dist/).
 */

export interface RevocationCheck {
  /**
   * `introspect` asks the broker about each token (RFC 7662; freshest, one call per token per
   * cache period); `list` keeps the broker's list of revoked tokens (one call per cache period).
   */
  mode: 'introspect' | 'list';
  /** The resource server's own identity token, holding the broker's `introspector` role. */
  identityToken: () => string | Promise<string>;
  /**
   * How long an answer is reused (default 10 s): the most a revocation can go unseen. A call that
   * failed counts too: for this long after it, tokens are refused as `unavailable` unasked.
   */
  cacheMs?: number;
}

/** DPoP (RFC 9449): how `verifyRequest` checks the proofs that come with DPoP-bound tokens. */
export interface DpopOptions {
  /** Proof algorithms accepted (default: the asymmetric ones, ES256, EdDSA, RS256 and kin; never none or an HMAC). */
  algorithms?: readonly string[];
  /** How far a proof's `iat` may lie from now, either way, in seconds (default: `clockToleranceSeconds`). */
  proofWindowSeconds?: number;
  /**
   * How many proofs this process remembers against replay (default 100,000), each until its
   * window ends. Full, it refuses new proofs as `unavailable` rather than forget one early.
   */
  replayCacheSize?: number;
}

export interface BrokerVerifierOptions {
  /** The broker's `issuer`, exactly. */
  issuer: string;
  /** This resource server: the token's `aud` must be it. */
  audience: string;
  /**
   * Where to reach the broker, when not at its issuer URL (an internal address). Default: `issuer`.
   * https, or plain http to a loopback host (this machine): the keys every token is trusted by,
   * and the identity token of the revocation check, never cross the network in clear.
   */
  brokerUrl?: string;
  /** Default `${brokerUrl}/.well-known/jwks.json`. https, or plain http to a loopback host. */
  jwksUri?: string;
  /** Leeway for `exp` and `nbf`, seconds (default 30). */
  clockToleranceSeconds?: number;
  /**
   * The longest the JWKS is kept (default 10 minutes); within that, as long as the broker's
   * `Cache-Control: max-age` says, which is never longer than it publishes new keys ahead.
   */
  jwksMaxAgeMs?: number;
  /**
   * A token naming a key the cached JWKS lacks fetches it again, at most once this often, a failed
   * fetch counting (default 30 s). After a failed fetch, with no fresh copy, tokens are refused as
   * `unavailable` for this long without another try.
   */
  jwksCooldownMs?: number;
  revocation?: RevocationCheck;
  dpop?: DpopOptions;
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
  /**
   * Delegated tokens (an agent acting for a principal, RFC 8693 `act`): `required` takes only
   * those, `forbidden` refuses them, `allowed` (the default) takes either.
   */
  delegation?: 'required' | 'forbidden' | 'allowed';
}

export interface RequestRequirements extends VerifyRequirements {
  /** Take DPoP-bound tokens only: a Bearer token is refused here (default: both, each as its binding says). */
  requireDpop?: boolean;
}

/** The parts of an HTTP request that carry and bind a token. */
export interface PresentedRequest {
  /** The request's method, as received. */
  method: string;
  /**
   * The absolute URL the client addressed: this resource server's public base URL plus the
   * request's path (`https://registry.acme.internal${req.originalUrl}`), not one built from the
   * Host header, which the client chooses. A query or fragment is ignored.
   */
  url: string;
  /** The Authorization header: `Bearer <token>` or `DPoP <token>`. */
  authorization: string | undefined;
  /** Every DPoP header received (express: `req.headersDistinct.dpop`), so that two are refused. */
  dpop?: string | readonly string[] | undefined;
}

export interface BrokerVerifier {
  /**
   * Resolves to the token's claims, or rejects with a `BrokerTokenError` saying why not. A
   * DPoP-bound token is refused here: without the request it came with, its proof cannot be
   * checked (use `verifyRequest`).
   */
  verify(token: string, requirements?: VerifyRequirements): Promise<BrokerTokenClaims>;
  /**
   * The same for a request: its Bearer or DPoP token and, for a DPoP-bound token, the proof
   * that must come with it (this method and URL, this token's hash, the key of its `cnf.jkt`,
   * fresh, and never seen before by this process).
   */
  verifyRequest(request: PresentedRequest, requirements?: RequestRequirements): Promise<BrokerTokenClaims>;
}

export function createBrokerVerifier(options: BrokerVerifierOptions): BrokerVerifier {
  const base = (options.brokerUrl ?? options.issuer).replace(/\/+$/, '');
  const jwksUri = options.jwksUri ?? `${base}/.well-known/jwks.json`;
  // Refused at once, as the broker refuses such an issuer's jwksUri: keys fetched over plain http
  // from another host are whatever anyone on the way serves, and every token they sign is taken.
  secureUrl(jwksUri, options.jwksUri !== undefined ? 'jwksUri' : options.brokerUrl !== undefined ? 'brokerUrl' : 'issuer');
  if (options.revocation) secureUrl(base, options.brokerUrl !== undefined ? 'brokerUrl' : 'issuer');
  const fetchImpl = options.fetch ?? fetch;
  const now = options.now ?? Date.now;
  const clockTolerance = options.clockToleranceSeconds ?? 30;
  const jwks = brokerKeys({
    url: jwksUri,
    fetch: fetchImpl,
    now,
    maxAgeMs: options.jwksMaxAgeMs ?? 10 * 60_000,
    cooldownMs: options.jwksCooldownMs ?? 30_000,
    timeoutMs: 5_000,
  });
  const checkRevocation = options.revocation ? revocationCheck(base, options.revocation, fetchImpl, now, clockTolerance * 1000) : undefined;
  const dpop = {
    algorithms: options.dpop?.algorithms ?? DPOP_SIGNING_ALGORITHMS,
    windowMs: (options.dpop?.proofWindowSeconds ?? clockTolerance) * 1000,
    seen: createProofReplayCache(options.dpop?.replayCacheSize ?? 100_000, now),
  };

  /** The signature, issuer, audience, type and lifetime, and the shape of `act` and `cnf`. */
  async function verifySigned(token: string): Promise<{ claims: BrokerTokenClaims; jkt: string | undefined }> {
    let claims: BrokerTokenClaims;
    try {
      ({ payload: claims } = (await jwtVerify(token, jwks, {
        issuer: options.issuer,
        audience: options.audience,
        typ: 'at+jwt',
        algorithms: ['ES256', 'EdDSA', 'RS256'],
        clockTolerance,
        currentDate: new Date(now()),
        requiredClaims: ['sub', 'jti', 'exp', 'scope'],
      })) as unknown as { payload: BrokerTokenClaims });
    } catch (error) {
      throw refusal(error);
    }
    // Signed by the broker, yet not of its shape: refused as malformed, never a TypeError further on.
    if (typeof claims.scope !== 'string') throw new BrokerTokenError('invalid', 'token scope is not a string');
    actorChain(claims);
    return { claims, jkt: boundKeyThumbprint(claims) };
  }

  /** What the resource server asks of the token; the revocation check last, as it may call the broker. */
  async function checkRequirements(token: string, claims: BrokerTokenClaims, requirements: VerifyRequirements): Promise<BrokerTokenClaims> {
    const scopes = new Set(claims.scope.split(' '));
    const missing = (requirements.requiredScopes ?? []).filter((scope) => !scopes.has(scope));
    if (missing.length > 0) throw new BrokerTokenError('scope', `token lacks scope ${missing.join(', ')}`);
    const approvals = requirements.requireApprovals === true ? 1 : Number(requirements.requireApprovals ?? 0);
    if ((claims.approvers?.length ?? 0) < approvals) {
      throw new BrokerTokenError('approvals', `token carries ${claims.approvers?.length ?? 0} approvals, ${approvals} needed`);
    }
    if (requirements.refuseBreakGlass && claims.break_glass) throw new BrokerTokenError('break_glass', 'break-glass tokens are refused here');
    checkDelegation(claims, requirements.delegation ?? 'allowed');
    await checkRevocation?.(token, claims);
    return claims;
  }

  /** RFC 9449 section 7: the proof is by the token's key and for this request (whether it is new, `rememberProof`). */
  async function checkProof(request: PresentedRequest, token: string, proof: string, jkt: string): Promise<VerifiedDpopProof> {
    try {
      return await verifyDpopProof(proof, {
        method: request.method,
        url: request.url,
        algorithms: dpop.algorithms,
        now: now(),
        clockSkewMs: dpop.windowMs,
        accessToken: token,
        jkt,
      });
    } catch (error) {
      throw dpopRefusal(error);
    }
  }

  /**
   * The proof is new: remembered, or refused as seen. Only for a token accepted on every other
   * count, so that tokens refused here (revoked, lacking a scope) cannot fill the memory of proofs
   * and have every DPoP request refused as `unavailable`.
   */
  function rememberProof(verified: VerifiedDpopProof): void {
    const recorded = dpop.seen.record(`${verified.jkt}.${verified.jti}`, verified.replayWindowEndsAt);
    if (recorded === 'replayed') throw new BrokerTokenError('dpop', 'the DPoP proof was used before: make a fresh proof for every request');
    if (recorded === 'full') throw new BrokerTokenError('unavailable', 'too many DPoP proofs to remember against replay; try again shortly');
  }

  return {
    async verify(token, requirements = {}) {
      const { claims, jkt } = await verifySigned(token);
      if (jkt !== undefined) throw new BrokerTokenError('dpop', 'the token is DPoP-bound: verify it with the proof of its request (verifyRequest)');
      return checkRequirements(token, claims, requirements);
    },

    async verifyRequest(request, requirements = {}) {
      const { scheme, token } = readAuthorization(request.authorization);
      let proof: string | undefined;
      if (scheme === 'dpop') {
        try {
          proof = singleDpopProof(request.dpop);
        } catch (error) {
          throw dpopRefusal(error);
        }
        if (proof === undefined) throw new BrokerTokenError('dpop', 'Authorization: DPoP needs a DPoP proof header');
      } else if (requirements.requireDpop) {
        throw new BrokerTokenError('dpop', 'this resource server takes DPoP-bound tokens only: Authorization: DPoP with a DPoP proof');
      }

      const { claims, jkt } = await verifySigned(token);
      // A bound token as Bearer is what a thief would send: its holder would have sent a proof.
      if (scheme === 'bearer' && jkt !== undefined) {
        throw new BrokerTokenError('dpop', 'the token is DPoP-bound: send it as Authorization: DPoP with a proof by its key');
      }
      if (scheme === 'dpop' && jkt === undefined) throw new BrokerTokenError('dpop', 'the token is not DPoP-bound (no cnf.jkt): send it as Bearer');
      const verified = proof !== undefined && jkt !== undefined ? await checkProof(request, token, proof, jkt) : undefined;
      await checkRequirements(token, claims, requirements);
      if (verified) rememberProof(verified);
      return claims;
    },
  };
}

/** https, or plain http to this machine; no user or password (fetch refuses them, and URLs end up in logs). */
function secureUrl(text: string, option: string): void {
  const url = URL.parse(text);
  if (!url || !isSecureOrLoopback(url)) {
    throw new TypeError(`createBrokerVerifier: ${option} must be an https URL (plain http only to a loopback host), not ${url ? `${url.protocol}//${url.host}` : 'this'}`);
  }
  if (url.username !== '' || url.password !== '') throw new TypeError(`createBrokerVerifier: ${option} must not carry a user or password`);
}

function checkDelegation(claims: BrokerTokenClaims, delegation: 'required' | 'forbidden' | 'allowed'): void {
  const delegated = claims.act !== undefined;
  if (delegation === 'required' && !delegated) {
    throw new BrokerTokenError('delegation', 'this resource server takes delegated tokens only (an agent acting for a principal, act); this one is not');
  }
  if (delegation === 'forbidden' && delegated) {
    throw new BrokerTokenError('delegation', 'this resource server refuses delegated tokens; this one is held by an actor (act) for its subject');
  }
}

/** RFC 6750 section 2.1 and RFC 9449 section 7.1: a scheme, case-insensitive, and one token68. */
function readAuthorization(header: string | undefined): { scheme: 'bearer' | 'dpop'; token: string } {
  if (header === undefined || header.trim() === '') throw new BrokerTokenError('missing', 'no access token: Authorization: Bearer or DPoP <token>');
  const match = /^(Bearer|DPoP) +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header);
  if (!match) throw new BrokerTokenError('invalid', 'the Authorization header is not Bearer or DPoP followed by one token');
  return { scheme: (match[1] as string).toLowerCase() as 'bearer' | 'dpop', token: match[2] as string };
}

/**
 * The proof rules speak the broker's error; a resource server hears `dpop` with what was wrong.
 * Anything else is the resource server's own defect (a request URL it cannot read), rethrown.
 */
function dpopRefusal(error: unknown): BrokerTokenError {
  if (error instanceof InvalidDpopProof) return new BrokerTokenError('dpop', error.detail);
  throw error;
}

/**
 * One-call convenience over a verifier kept per set of options: a call with other options (a
 * shorter `cacheMs`, another identity) gets a verifier of its own. At most `MAX_VERIFIERS` are
 * kept, the least recently used given up first: a caller passing a new `identityToken` function
 * on each call (an arrow function written in the call) makes a new set of options each time, and
 * would otherwise grow this without bound.
 */
const verifiers = new Map<string, BrokerVerifier>();
const MAX_VERIFIERS = 64;
/** Functions among the options (`identityToken`) compared by identity. */
const functionIds = new WeakMap<object, number>();
let functionsSeen = 0;
const optionsKey = (options: object) =>
  JSON.stringify(options, (_name, value: unknown) => {
    if (typeof value !== 'function') return value;
    if (!functionIds.has(value)) functionIds.set(value, (functionsSeen += 1));
    return `function ${functionIds.get(value)}`;
  });
export function verifyBrokerToken(
  token: string,
  options: Omit<BrokerVerifierOptions, 'fetch' | 'now'> & VerifyRequirements,
): Promise<BrokerTokenClaims> {
  const { requiredScopes, requireApprovals, refuseBreakGlass, delegation, ...verifierOptions } = options;
  const key = optionsKey(verifierOptions);
  let verifier = verifiers.get(key);
  if (verifier) {
    verifiers.delete(key); // most recently used last
  } else {
    verifier = createBrokerVerifier(verifierOptions);
    if (verifiers.size >= MAX_VERIFIERS) verifiers.delete(verifiers.keys().next().value as string);
  }
  verifiers.set(key, verifier);
  return verifier.verify(token, {
    ...(requiredScopes ? { requiredScopes } : {}),
    ...(requireApprovals !== undefined ? { requireApprovals } : {}),
    ...(refuseBreakGlass !== undefined ? { refuseBreakGlass } : {}),
    ...(delegation !== undefined ? { delegation } : {}),
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

/** Fails closed: when the broker cannot be asked, or its answer cannot be read, the token is not accepted. */
function revocationCheck(base: string, check: RevocationCheck, fetchImpl: typeof fetch, now: () => number, clockToleranceMs: number) {
  const cacheMs = check.cacheMs ?? 10_000;
  // The last call that failed, and when, until one succeeds: for `cacheMs` after it every check is
  // refused as it was, unasked, or each verification would call a broker that is down or overloaded.
  let failure: { error: BrokerTokenError; at: number } | undefined;
  const call = async (path: string, init: RequestInit = {}): Promise<Record<string, unknown>> => {
    if (failure && now() - failure.at < cacheMs) throw failure.error;
    try {
      const answer = await ask(path, init);
      failure = undefined;
      return answer;
    } catch (error) {
      failure = { error: error as BrokerTokenError, at: now() };
      throw error;
    }
  };
  /** The broker's answer, a JSON object. Whatever keeps it from being had (timed out mid-body, too large, not JSON) is `unavailable`. */
  const ask = async (path: string, init: RequestInit = {}): Promise<Record<string, unknown>> => {
    let body: unknown;
    try {
      const response = await fetchImpl(`${base}${path}`, {
        ...init,
        headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${await check.identityToken()}` },
        // Not followed: the identity token would go wherever a redirect leads, and the answer come from there.
        redirect: 'error',
        signal: AbortSignal.timeout(5_000),
      });
      if (!response.ok) {
        void response.body?.cancel().catch(() => undefined);
        throw unavailable(`the broker answered ${response.status} about revocation`);
      }
      body = await readBoundedJson(response);
    } catch (error) {
      if (error instanceof BrokerTokenError) throw error;
      throw unavailable('the broker could not be asked about revocation, or its answer not read', error);
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw unavailable(`the broker's answer at ${path} is not an object`);
    return body as Record<string, unknown>;
  };

  const revokedToken = () => new BrokerTokenError('revoked', 'token was revoked');
  // Past its exp, within the clock tolerance, the broker no longer vouches for a token: inactive at
  // introspection, gone from its list. Refused as what it is, expired, not as revoked.
  const expiredToken = () => new BrokerTokenError('expired', 'token has expired: past its exp, the broker can no longer say it was not revoked');

  if (check.mode === 'introspect') {
    const answers = new Map<string, { active: boolean; at: number }>();
    /** Calls under way, by token: a token verified many times at once is asked about once. */
    const asking = new Map<string, Promise<boolean>>();
    const inactive = (claims: BrokerTokenClaims) => (claims.exp * 1000 <= now() ? expiredToken() : revokedToken());
    const introspect = async (key: string, token: string): Promise<boolean> => {
      const body = await call('/oauth2/introspect', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token }).toString(),
      });
      // Oldest first (a Map keeps insertion order): expired answers are dropped from the front.
      answers.delete(key);
      answers.set(key, { active: body.active === true, at: now() });
      for (const [k, v] of answers) {
        if (now() - v.at < cacheMs) break;
        answers.delete(k);
      }
      return body.active === true;
    };
    return async (token: string, claims: BrokerTokenClaims): Promise<void> => {
      const key = createHash('sha256').update(token).digest('hex');
      const cached = answers.get(key);
      let active: boolean;
      if (cached && now() - cached.at < cacheMs) active = cached.active;
      else {
        let answer = asking.get(key);
        if (!answer) {
          answer = introspect(key, token).finally(() => asking.delete(key));
          asking.set(key, answer);
        }
        active = await answer;
      }
      if (!active) throw inactive(claims);
    };
  }

  // Each revoked jti with its exp (seconds), kept until its token is refused as expired: the
  // broker lists a jti only until its exp, but a token is accepted until exp plus the clock
  // tolerance, so a list that no longer names it does not make it good again.
  const revoked = new Map<string, number>();
  let listedAt = Number.NEGATIVE_INFINITY;
  let listing: Promise<void> | undefined;
  /**
   * Every page, once for all the verifications that find the list stale meanwhile. One fetch at a
   * time also means a fetch begins only after the last one ended: an older list never lands
   * after a newer one.
   */
  const refresh = () => {
    listing ??= (async () => {
      // Dated from the start: a revocation made while the pages were read may be missing from them.
      const at = now();
      const followed = new Set<string>();
      let cursor: string | undefined;
      do {
        if (cursor !== undefined) {
          // Given again (a broken or hostile broker), it would be read for ever, every verification waiting on it.
          if (followed.has(cursor)) throw unavailable('the broker\'s revocation list did not end: it gave again the cursor of a page already read');
          followed.add(cursor);
        }
        const page = readRevocationPage(await call(`/v1/revocations?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`));
        for (const { jti, exp } of page.items) revoked.set(jti, exp);
        cursor = page.nextCursor;
      } while (cursor);
      for (const [jti, exp] of revoked) if (exp * 1000 + clockToleranceMs <= now()) revoked.delete(jti);
      listedAt = at;
    })()
      .catch((error: unknown) => {
        // A list that cannot be used (a page not as the contract says, one that never ends) is a
        // failed call too: refused unasked for `cacheMs`, as a broker that cannot be asked. A
        // failure `call` recorded (or refused by) keeps its time.
        failure ??= { error: error as BrokerTokenError, at: now() };
        throw error;
      })
      .finally(() => {
        listing = undefined;
      });
    return listing;
  };
  return async (_token: string, claims: BrokerTokenClaims): Promise<void> => {
    if (now() - listedAt >= cacheMs) await refresh();
    if (revoked.has(claims.jti)) throw revokedToken();
    // A list read at or after its exp would not name it, revoked or not (the broker lists a jti
    // until its exp): a verifier started since, or one that read the list then, cannot vouch for it.
    if (claims.exp * 1000 <= listedAt) throw expiredToken();
  };
}

/** CONTRACT section 4: `{items: [{jti, exp}], next_cursor}`. Anything else is refused, not half read. */
function readRevocationPage(page: Record<string, unknown>): { items: { jti: string; exp: number }[]; nextCursor: string | undefined } {
  const { items, next_cursor: nextCursor } = page;
  if (!Array.isArray(items)) throw unavailable('the broker\'s revocation list has no items');
  for (const item of items as unknown[]) {
    const { jti, exp } = (typeof item === 'object' && item !== null ? item : {}) as Record<string, unknown>;
    if (typeof jti !== 'string' || typeof exp !== 'number') throw unavailable('the broker\'s revocation list holds an item that is not {jti, exp}');
  }
  if (nextCursor !== undefined && nextCursor !== null && typeof nextCursor !== 'string') throw unavailable('the broker\'s revocation list has a next_cursor that is not a string');
  return { items: items as { jti: string; exp: number }[], nextCursor: nextCursor ?? undefined };
}

const unavailable = (why: string, cause?: unknown) => new BrokerTokenError('unavailable', why, cause === undefined ? undefined : { cause });
