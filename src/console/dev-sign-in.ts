import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import express, { Router, type Request, type Response } from 'express';
import type { Logger } from 'pino';
import type { BrokerConfig, ConsoleConfig, IssuerConfig } from '../config/index.js';
import { loadOrCreateDevKey, mintDevIdentityToken } from '../identity/index.js';
import type { Clock } from '../shared/clock.js';
import { isLoopbackHost } from '../shared/loopback.js';
import { consoleCallbackUrl } from './links.js';

/**
 * DEVELOPMENT ONLY. A sign-in page for the dev person issuer, so that `npm start` and a browser
 * are all a newcomer needs to approve a request as alice: it plays that issuer's OpenID
 * provider (authorization code with PKCE, public clients) and hands out ID tokens signed with
 * the dev issuer's key, for whoever you say you are. It exists only when the configuration sets
 * `console.devSignIn` for a `dev:` issuer, which the schema checks and this module checks again.
 */

export const DEV_SIGN_IN_PATH = '/dev-sign-in';

const CODE_TTL_MS = 60_000;
const ID_TOKEN_TTL_SECONDS = 3600;
const MAX_PENDING_CODES = 1_000;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;
const PKCE_VALUE = /^[A-Za-z0-9._~-]{43,128}$/;
const OPAQUE = /^[\x21-\x7e]{0,512}$/;

interface AuthorizationRequest {
  client_id: string;
  redirect_uri: string;
  code_challenge: string;
  state: string;
  nonce: string;
  scope: string;
}

interface PendingCode extends AuthorizationRequest {
  /** Tells one code from another, for the codes already spent. */
  id: string;
  subject: string;
  groups: string[];
  expiresAt: number;
}

/** A refusal the client is told of at its redirect URI (which was checked first). */
class AuthorizationError extends Error {
  constructor(
    readonly code: 'invalid_request' | 'unsupported_response_type' | 'invalid_scope' | 'access_denied',
    message: string,
  ) {
    super(message);
  }
}

export interface DevSignInOptions {
  config: BrokerConfig;
  console: ConsoleConfig;
  logger: Logger;
  clock: Clock;
}

/** The dev issuer the sign-in signs for, or an error: never anything but a `dev:` person issuer. */
export function devSignInIssuer(config: BrokerConfig, web: ConsoleConfig): IssuerConfig {
  const issuer = config.identity.issuers.find((candidate) => candidate.name === web.issuer);
  if (!issuer || issuer.kind !== 'person' || !issuer.dev || issuer.issuer === undefined) {
    throw new Error(`console.devSignIn signs only for a dev: person issuer, and "${web.issuer}" is not one`);
  }
  return issuer;
}

/** The groups the configuration's rules look for at this issuer: the choices offered on the page. */
function knownGroups(config: BrokerConfig, issuerName: string): Map<string, string[]> {
  const groups = new Map<string, string[]>();
  const note = (match: { issuer: string; claims?: Record<string, unknown> | undefined }, what: string) => {
    const value = match.issuer === issuerName ? match.claims?.groups : undefined;
    if (typeof value !== 'string' || value.includes('*')) return;
    groups.set(value, [...(groups.get(value) ?? []), what]);
  };
  for (const rule of config.roles) note(rule.match, rule.role);
  for (const scope of config.scopes) if (scope.approvers) note(scope.approvers, `approves ${scope.name}`);
  for (const policy of config.policies) note(policy.match, `may request ${policy.scopes.join(', ')}`);
  return groups;
}

export function devSignInRoutes(options: DevSignInOptions): Router {
  const { config, console: web, logger, clock } = options;
  const issuer = devSignInIssuer(config, web);
  const clientIds = new Set([web.clientId, web.cliClientId ?? web.clientId]);
  const groups = knownGroups(config, issuer.name);
  /** Codes redeemed here, until they would have expired: a code is good once. */
  const spent = new Map<string, number>();
  // A code carries its request, sealed with a key every worker derives alike from the dev issuer's
  // key (the default start runs a worker per core): the authorization and the token request of
  // one sign-in may reach two workers. Each worker spends a code once; a copy redeemed at another
  // is still useless without the client's PKCE verifier.
  const sealing = loadOrCreateDevKey((issuer.dev as { keyDir: string }).keyDir).then((jwk) =>
    Buffer.from(hkdfSync('sha256', String(jwk.d), Buffer.alloc(0), 'jit dev sign-in codes', 32)),
  );
  sealing.catch(() => {}); // a key that cannot be read fails each sign-in that needs it, not the process
  logger.warn(
    { issuer: issuer.name, path: `/console${DEV_SIGN_IN_PATH}` },
    'DEVELOPMENT SIGN-IN: anyone who can reach the broker can sign in to the console as anyone. Never run this in production.',
  );

  /** The console's callback at the broker's issuer, or any loopback address (RFC 8252, any port). */
  const redirectAllowed = (uri: string) => {
    const url = URL.parse(uri);
    if (!url || url.hash !== '' || url.username !== '' || url.password !== '') return false;
    return uri === consoleCallbackUrl(config.issuer) || (url.protocol === 'http:' && isLoopbackHost(url.hostname));
  };

  /** Client and redirect first: until both are known good, nothing is sent anywhere. */
  function authorizationRequest(input: Record<string, unknown>): AuthorizationRequest {
    const text = (name: string) => (typeof input[name] === 'string' ? (input[name] as string) : '');
    const request = {
      client_id: text('client_id'),
      redirect_uri: text('redirect_uri'),
      code_challenge: text('code_challenge'),
      state: text('state'),
      nonce: text('nonce'),
      scope: text('scope'),
    };
    if (!clientIds.has(request.client_id)) throw new BadClient('unknown client_id');
    if (!redirectAllowed(request.redirect_uri)) throw new BadClient('redirect_uri is not the console\'s callback nor a loopback address');
    if (text('response_type') !== 'code') throw new AuthorizationError('unsupported_response_type', 'only response_type=code');
    if (!request.scope.split(' ').includes('openid')) throw new AuthorizationError('invalid_scope', 'scope must include openid');
    if (text('code_challenge_method') !== 'S256' || !PKCE_VALUE.test(request.code_challenge)) {
      throw new AuthorizationError('invalid_request', 'PKCE is required: code_challenge with code_challenge_method=S256');
    }
    if (!OPAQUE.test(request.state) || !OPAQUE.test(request.nonce)) throw new AuthorizationError('invalid_request', 'state and nonce must be short printable ASCII');
    return request;
  }

  const redirectWith = (request: AuthorizationRequest, params: Record<string, string>) => {
    const url = new URL(request.redirect_uri);
    for (const [name, value] of Object.entries({ ...params, ...(request.state ? { state: request.state } : {}), iss: issuer.issuer as string })) {
      url.searchParams.set(name, value);
    }
    return url.href;
  };

  const router = Router({ caseSensitive: true });
  router.use((req, res, next) => {
    res.set({ 'Cache-Control': 'no-store', 'Referrer-Policy': 'no-referrer', 'X-Frame-Options': 'DENY' });
    // A page elsewhere whose name an attacker re-points at this machine (DNS rebinding) would be
    // "the same origin", and would sign in as anyone it likes: only this machine's own names, or
    // the broker's issuer, reach the sign-in.
    if (!reachedAs(req, config.issuer)) return void res.status(403).type('text/plain').send('Development sign-in answers only at a loopback address or at the broker\'s issuer.');
    next();
  });

  router.get('/.well-known/openid-configuration', (req, res) => {
    const base = `${origin(req)}/console${DEV_SIGN_IN_PATH}`;
    res.json({
      issuer: issuer.issuer,
      authorization_endpoint: `${base}/authorize`,
      token_endpoint: `${base}/token`,
      response_types_supported: ['code'],
      grant_types_supported: ['authorization_code'],
      code_challenge_methods_supported: ['S256'],
      token_endpoint_auth_methods_supported: ['none'],
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: issuer.algorithms,
      scopes_supported: ['openid', 'profile', 'email', 'groups'],
      claims_supported: ['sub', 'preferred_username', 'groups', 'nonce'],
    });
  });

  /**
   * A request refused as RFC 6749 section 4.1.2.1 says: a client or redirect URI that is not
   * known good gets a page here and is sent nowhere; any other refusal goes back to the client.
   */
  const refuse = (res: Response, input: Record<string, unknown>, error: unknown) => {
    if (error instanceof BadClient) return res.status(400).type('text/plain').send(`Development sign-in: ${error.message}.`);
    if (error instanceof AuthorizationError) return res.redirect(303, redirectWith(authorizationRequestUnchecked(input), { error: error.code, error_description: error.message }));
    throw error;
  };

  router.get('/authorize', (req, res) => {
    let request: AuthorizationRequest;
    try {
      request = authorizationRequest(req.query);
    } catch (error) {
      return refuse(res, req.query, error);
    }
    res.set('Content-Security-Policy', pagePolicy(request.redirect_uri)).type('html').send(signInPage(request, groups, issuer));
  });

  router.post('/authorize', express.urlencoded({ extended: false, limit: '16kb', parameterLimit: 50 }), async (req, res) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    let request: AuthorizationRequest;
    try {
      request = authorizationRequest(body);
    } catch (error) {
      return refuse(res, body, error);
    }
    const subject = typeof body.username === 'string' ? body.username.trim() : '';
    const chosen = [body.group ?? []].flat().filter((g): g is string => typeof g === 'string');
    const extra = typeof body.groups === 'string' ? body.groups.split(/[\s,]+/).filter(Boolean) : [];
    const all = [...new Set([...chosen, ...extra])];
    if (!NAME.test(subject) || all.length > 20 || !all.every((group) => NAME.test(group))) {
      res.status(400).set('Content-Security-Policy', pagePolicy(request.redirect_uri));
      return res.type('html').send(signInPage(request, groups, issuer, 'A name is letters, digits and . _ @ - (64 at most), and so is each group.'));
    }
    const code = seal(await sealing, { ...request, id: randomBytes(16).toString('base64url'), subject, groups: all, expiresAt: clock() + CODE_TTL_MS });
    logger.info({ issuer: issuer.name, sub: subject, groups: all }, 'development sign-in');
    res.redirect(303, redirectWith(request, { code }));
  });

  router.post('/token', express.urlencoded({ extended: false, limit: '16kb', parameterLimit: 20 }), async (req, res) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const refuse = (error: string, description: string) => res.status(400).json({ error, error_description: description });
    if (body.grant_type !== 'authorization_code') return refuse('unsupported_grant_type', 'only authorization_code');
    const pending = typeof body.code === 'string' ? unseal(await sealing, body.code) : undefined;
    if (!pending || pending.expiresAt <= clock() || spent.has(pending.id)) return refuse('invalid_grant', 'the code is unknown, spent or expired');
    // A code is good once: whatever happens next, it is spent.
    if (spent.size >= MAX_PENDING_CODES) sweep(spent, clock());
    if (spent.size >= MAX_PENDING_CODES) spent.delete(spent.keys().next().value as string);
    spent.set(pending.id, pending.expiresAt);
    if (body.client_id !== pending.client_id) return refuse('invalid_grant', 'the code was issued to another client');
    if (body.redirect_uri !== pending.redirect_uri) return refuse('invalid_grant', 'redirect_uri differs from the authorization request');
    const verifier = typeof body.code_verifier === 'string' ? body.code_verifier : '';
    if (!PKCE_VALUE.test(verifier) || createHash('sha256').update(verifier).digest('base64url') !== pending.code_challenge) {
      return refuse('invalid_grant', 'code_verifier does not match the code_challenge');
    }
    // Its `aud` is the client, as any OpenID provider's ID token; the issuer lists it among its audiences.
    const idToken = await mintDevIdentityToken(
      { ...issuer, audiences: [pending.client_id] },
      {
        subject: pending.subject,
        claims: { groups: pending.groups, ...(pending.nonce ? { nonce: pending.nonce } : {}) },
        ttlSeconds: ID_TOKEN_TTL_SECONDS,
        now: clock(),
      },
    );
    // An ID token only: the broker takes no access token from this issuer.
    res.json({ token_type: 'Bearer', id_token: idToken, expires_in: ID_TOKEN_TTL_SECONDS, scope: pending.scope });
  });

  return router;
}

class BadClient extends Error {}

/** Only used once the client and redirect are known good, to carry `state` back with an error. */
function authorizationRequestUnchecked(input: Record<string, unknown>): AuthorizationRequest {
  const text = (name: string) => (typeof input[name] === 'string' ? (input[name] as string) : '');
  return { client_id: text('client_id'), redirect_uri: text('redirect_uri'), code_challenge: '', state: OPAQUE.test(text('state')) ? text('state') : '', nonce: '', scope: '' };
}

/** A code: the pending sign-in, AES-256-GCM sealed (IV, ciphertext, tag), base64url. */
function seal(key: Buffer, pending: PendingCode): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  const sealed = Buffer.concat([cipher.update(JSON.stringify(pending), 'utf8'), cipher.final()]);
  return Buffer.concat([iv, sealed, cipher.getAuthTag()]).toString('base64url');
}

/** The sign-in a code seals, or undefined for anything this issuer's key did not seal. */
function unseal(key: Buffer, code: string): PendingCode | undefined {
  const bytes = Buffer.from(code, 'base64url');
  if (bytes.length < 12 + 16 + 2 || bytes.length > 8192) return undefined;
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, bytes.subarray(0, 12), { authTagLength: 16 });
    decipher.setAuthTag(bytes.subarray(bytes.length - 16));
    const text = Buffer.concat([decipher.update(bytes.subarray(12, bytes.length - 16)), decipher.final()]).toString('utf8');
    return JSON.parse(text) as PendingCode;
  } catch {
    return undefined;
  }
}

function sweep(spent: Map<string, number>, now: number): void {
  for (const [id, expiresAt] of spent) if (expiresAt <= now) spent.delete(id);
}

/**
 * The origin the caller reached the broker at. Development only: the dev sign-in's endpoints
 * must work on whatever port `PORT` chose, while `issuer` keeps naming the default one.
 */
const origin = (req: Request) => `${req.protocol}://${req.get('host') ?? '127.0.0.1'}`;

/** Whether the request names this machine (a loopback host) or the broker's issuer as its Host. */
function reachedAs(req: Request, brokerIssuer: string): boolean {
  const host = req.get('host');
  if (host === undefined) return false;
  try {
    const { hostname } = new URL(`http://${host}`);
    return isLoopbackHost(hostname) || hostname === new URL(brokerIssuer).hostname;
  } catch {
    return false;
  }
}

/** No script at all; the form may post here, and the redirect after it go to the (checked) client. */
function pagePolicy(redirectUri: string): string {
  return [
    "default-src 'none'",
    "style-src 'self'",
    `form-action 'self' ${new URL(redirectUri).origin}`,
    "base-uri 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}

const escapeHtml = (text: string) =>
  text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);

function signInPage(request: AuthorizationRequest, groups: ReadonlyMap<string, string[]>, issuer: IssuerConfig, problem?: string): string {
  const hidden = Object.entries({ ...request, response_type: 'code', code_challenge_method: 'S256' })
    .map(([name, value]) => `<input type="hidden" name="${escapeHtml(name)}" value="${escapeHtml(value)}">`)
    .join('\n      ');
  const choices = [...groups]
    .map(
      ([group, uses]) =>
        `<label class="choice"><input type="checkbox" name="group" value="${escapeHtml(group)}"> <code>${escapeHtml(group)}</code> <span class="muted">${escapeHtml(uses.join('; '))}</span></label>`,
    )
    .join('\n      ');
  return `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Development sign-in</title>
  <link rel="stylesheet" href="/console/assets/console.css">
</head>
<body>
  <main class="narrow">
    <p class="banner danger">DEVELOPMENT ONLY. This page signs you in as anyone you name, as the development issuer <code>${escapeHtml(issuer.name)}</code> (${escapeHtml(issuer.issuer ?? '')}). A broker in production never has it.</p>
    <h1>Who are you?</h1>
    ${problem ? `<p class="problem" role="alert">${escapeHtml(problem)}</p>` : ''}
    <form method="post" action="/console${DEV_SIGN_IN_PATH}/authorize">
      ${hidden}
      <label for="username">Your name (<code>sub</code> and <code>preferred_username</code>)</label>
      <input id="username" name="username" required pattern="[A-Za-z0-9][A-Za-z0-9._@\\-]{0,63}" placeholder="alice" autocomplete="off">
      <fieldset>
        <legend>Your groups (<code>groups</code>)</legend>
      ${choices || '<p class="muted">No rule of the configuration names a group of this issuer.</p>'}
        <label for="groups">Other groups, separated by spaces</label>
        <input id="groups" name="groups" autocomplete="off">
      </fieldset>
      <button type="submit" class="primary">Sign in</button>
    </form>
  </main>
</body>
</html>
`;
}
