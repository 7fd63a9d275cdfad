import { createHash, randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRemoteJWKSet, decodeJwt, jwtVerify, type JWTPayload } from 'jose';
import { boundedJson } from '../answer.js';
import { loginFile, writeConfigFile } from '../config-dir.js';
import { parseDuration } from '../duration.js';
import { brokerUrl, CliError, EXIT, parse, shown, shownJson, usage, type CliIo } from '../io.js';
import { openBrowser } from '../open-browser.js';
import { isSecureOrLoopback } from '../../shared/loopback.js';

export const help = `jit login [--broker URL] [--no-browser] [--timeout 5m] [--json]
  Signs you in at the SSO the broker names (OpenID Connect, authorization code with PKCE through
  a loopback redirect) and keeps your ID token in <config dir>/login.json (mode 0600) until it
  expires; later commands use it when no other identity is given. The config dir is env
  JIT_CONFIG_DIR, else $XDG_CONFIG_HOME/jit, else ~/.config/jit.`;

export const logoutHelp = `jit logout
  Forgets the ID token jit login kept (<config dir>/login.json).`;

/** `<config dir>/login.json`, as the other commands read it. */
export interface LoginFile {
  broker: string;
  issuer: string;
  id_token: string;
  expires_at: string;
}


/** What `/console/config.json` says about signing in. */
interface SignInDocument {
  issuer: string;
  discovery_url: string;
  cli_client_id: string;
  scopes: string[];
}

interface Discovery {
  issuer: string;
  authorization_endpoint: string;
  token_endpoint: string;
  jwks_uri?: string;
}

export async function login(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, {
    broker: { type: 'string' },
    config: { type: 'string' },
    'no-browser': { type: 'boolean', default: false },
    timeout: { type: 'string', default: '5m' },
    json: { type: 'boolean', default: false },
  });
  const timeoutMs = parseDuration(values.timeout, '--timeout');
  if (timeoutMs < 1000) throw usage(`--timeout ${values.timeout} is shorter than a second`);
  const broker = brokerUrl(io, values).replace(/\/+$/, '');

  const signIn = await getJson<SignInDocument>(io, `${broker}/console/config.json`, (status) =>
    status === 404 ? `the broker at ${broker} has no console configured, so it names no SSO to sign in at` : `the broker at ${broker} answered ${status}`,
  );
  const discoveryUrl = ssoUrl('discovery document', signIn.discovery_url, broker);
  const discovery = await getJson<Discovery>(io, discoveryUrl, (status) => `the SSO's discovery document answered ${status}`);
  if (discovery.issuer !== signIn.issuer) throw new CliError(`the SSO's discovery document names issuer ${shown(String(discovery.issuer))}, not ${shown(signIn.issuer)}`);
  ssoUrl('authorization_endpoint', discovery.authorization_endpoint, broker);
  ssoUrl('token_endpoint', discovery.token_endpoint, broker);
  if (discovery.jwks_uri !== undefined) ssoUrl('jwks_uri', discovery.jwks_uri, broker);

  const verifier = randomBytes(32).toString('base64url');
  const state = randomBytes(16).toString('base64url');
  const nonce = randomBytes(16).toString('base64url');
  const loopback = await listenLoopback(state);
  try {
    const redirectUri = `http://127.0.0.1:${loopback.port}/callback`;
    const url = new URL(discovery.authorization_endpoint);
    const params = {
      response_type: 'code',
      client_id: signIn.cli_client_id,
      redirect_uri: redirectUri,
      scope: signIn.scopes.join(' '),
      state,
      nonce,
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
    };
    for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
    io.stderr(`Sign in at ${shown(signIn.issuer)} in your browser:\n  ${url.href}\nWaiting for it (up to ${values.timeout})...\n`);
    if (io.interactive && !values['no-browser']) openBrowser(url.href);

    // The listener hands over only an answer carrying this sign-in's state: an issuer's refusal is shown from here on.
    const callback = await loopback.callback(timeoutMs);
    if (callback.has('iss') && callback.get('iss') !== signIn.issuer) throw new CliError('the answer came from another issuer');
    if (callback.get('error')) throw new CliError(`the SSO refused: ${shown(callback.get('error_description') ?? callback.get('error') ?? '')}`);
    const code = callback.get('code');
    if (!code) throw new CliError('the SSO sent no code');

    const idToken = await redeem(io, discovery.token_endpoint, { code, redirect_uri: redirectUri, client_id: signIn.cli_client_id, code_verifier: verifier });
    const claims = await checkIdToken(idToken, discovery, signIn, nonce);
    const saved: LoginFile = { broker, issuer: signIn.issuer, id_token: idToken, expires_at: new Date((claims.exp as number) * 1000).toISOString() };
    const path = writeLoginFile(io.env, saved);
    const name = String(claims.preferred_username ?? claims.email ?? claims.sub);
    if (values.json) io.stdout(`${shownJson({ issuer: saved.issuer, sub: claims.sub, expires_at: saved.expires_at, file: path })}\n`);
    io.stderr(`Signed in as ${shown(name)} at ${shown(signIn.issuer)} until ${saved.expires_at}; kept in ${path}.\n`);
    return 0;
  } finally {
    await loopback.close();
  }
}

export async function logout(args: string[], io: CliIo): Promise<number> {
  parse(args, {});
  const path = loginFile(io.env);
  rmSync(path, { force: true });
  io.stderr(`Signed out: ${path} is gone.\n`);
  return 0;
}

/**
 * Where the sign-in goes: the code and its PKCE verifier to the token endpoint, the keys that
 * vouch for the ID token from the JWKS. https, or plain http to this machine or to the broker's
 * own origin (which its URL was allowed to be): the broker refuses the same plain-http endpoints
 * for the console (console/discovery.ts), and a discovery document that names them anyway would
 * have the code and verifier cross the network in clear text, for anyone on the way to redeem.
 */
function ssoUrl(name: string, value: unknown, broker: string): string {
  const url = typeof value === 'string' ? URL.parse(value) : null;
  if (url && (isSecureOrLoopback(url) || url.origin === new URL(broker).origin)) return url.href;
  if (url?.protocol === 'http:') throw new CliError(`the SSO's ${name} is ${shown(url.href)}: plain http to another machine, where anyone on the way could take the sign-in; it must be https`);
  throw new CliError(`the SSO's ${name} is not an https URL`);
}

async function getJson<T>(io: CliIo, url: string, refused: (status: number) => string): Promise<T> {
  let response: Response;
  try {
    response = await io.fetch(url, { headers: { accept: 'application/json' }, redirect: 'error', signal: AbortSignal.timeout(10_000) });
  } catch {
    throw new CliError(`cannot reach ${new URL(url).origin}`, EXIT.unreachable);
  }
  if (!response.ok) throw new CliError(refused(response.status), [502, 503, 504].includes(response.status) ? EXIT.unreachable : EXIT.failed);
  try {
    return (await boundedJson(response)) as T;
  } catch {
    throw new CliError(`${new URL(url).origin} did not answer JSON`);
  }
}

async function redeem(io: CliIo, tokenEndpoint: string, params: Record<string, string>): Promise<string> {
  let body: { id_token?: unknown; error?: unknown; error_description?: unknown };
  try {
    const response = await io.fetch(tokenEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: new URLSearchParams({ grant_type: 'authorization_code', ...params }).toString(),
      redirect: 'error',
      signal: AbortSignal.timeout(10_000),
    });
    body = (await boundedJson(response)) as typeof body;
  } catch {
    throw new CliError('cannot redeem the code at the SSO\'s token endpoint');
  }
  if (typeof body.id_token !== 'string') {
    throw new CliError(`the SSO gave no ID token${typeof body.error === 'string' ? `: ${shown(body.error)}${typeof body.error_description === 'string' ? ` (${shown(body.error_description)})` : ''}` : ''}`);
  }
  return body.id_token;
}

/**
 * The ID token answers this sign-in: its issuer, for this client, with this nonce, not expired;
 * its signature checked against the SSO's keys where the discovery document names them (the
 * development sign-in names none). The broker verifies it again on every call.
 */
async function checkIdToken(idToken: string, discovery: Discovery, signIn: SignInDocument, nonce: string): Promise<JWTPayload> {
  let claims: JWTPayload;
  try {
    claims = discovery.jwks_uri
      ? (await jwtVerify(idToken, createRemoteJWKSet(new URL(discovery.jwks_uri)), { issuer: signIn.issuer, audience: signIn.cli_client_id })).payload
      : decodeJwt(idToken);
  } catch (error) {
    throw new CliError(`the SSO's ID token does not verify: ${shown((error as Error).message)}`);
  }
  const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (claims.iss !== signIn.issuer || !audiences.includes(signIn.cli_client_id)) throw new CliError('the ID token is not from the SSO for this client');
  if (claims.nonce !== nonce) throw new CliError('the ID token does not answer this sign-in (nonce)');
  if (typeof claims.exp !== 'number' || claims.exp * 1000 <= Date.now()) throw new CliError('the ID token has already expired');
  return claims;
}

/** Written whole or not at all: a 0600 file renamed into a 0700 directory. */
const writeLoginFile = (env: NodeJS.ProcessEnv, login: LoginFile): string => writeConfigFile(env, 'login.json', `${JSON.stringify(login, null, 2)}\n`);

/**
 * An HTTP listener on 127.0.0.1 for the SSO's redirect (RFC 8252, section 7.3), waiting for the
 * answer that carries this sign-in's `state`. Any process on this machine, or a web page probing
 * its ports, can reach the listener: an answer with another state (or none) is refused with a
 * 400 and the wait goes on, so it can neither end the sign-in nor put its text on the terminal.
 */
async function listenLoopback(state: string) {
  let resolve: (params: URLSearchParams) => void = () => undefined;
  const arrived = new Promise<URLSearchParams>((done) => (resolve = done));
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (req.method !== 'GET' || url.pathname !== '/callback') return res.writeHead(404).end();
    const ours = url.searchParams.get('state') === state;
    const ok = ours && url.searchParams.has('code');
    res
      .writeHead(ok ? 200 : 400, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store', 'referrer-policy': 'no-referrer' })
      .end(
        ok
          ? 'Signed in: you may close this window and return to the terminal.\n'
          : ours
            ? 'The sign-in did not succeed: see the terminal.\n'
            : 'This answer does not belong to the sign-in waiting here.\n',
      );
    if (ours) resolve(url.searchParams);
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  return {
    port: (server.address() as AddressInfo).port,
    async callback(timeoutMs: number): Promise<URLSearchParams> {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new CliError('no answer from the browser in time; run jit login again')), timeoutMs);
      });
      try {
        return await Promise.race([arrived, late]);
      } finally {
        clearTimeout(timer);
      }
    },
    close: () =>
      new Promise<void>((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  };
}
