import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import express from 'express';
import { decodeJwt } from 'jose';
import { pino } from 'pino';
import supertest from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../../src/config/index.js';
import { devSignInRoutes } from '../../src/console/dev-sign-in.js';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';

/** The console's route over HTTP: its headers, where it says to sign in, and the development sign-in. */

let t: TestBroker | undefined;
const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  await t?.close();
  t = undefined;
  while (closers.length > 0) await closers.pop()?.();
});

/** A person issuer whose discovery document says what `document(issuer)` returns. */
async function discoveryServer(document: (issuer: string) => unknown) {
  let fetches = 0;
  const server = createServer((_req, res) => {
    fetches += 1;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(document(issuer)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  closers.push(() => new Promise((resolve) => server.close(() => resolve())));
  return { issuer, get fetches() { return fetches; } };
}

const goodDocument = (issuer: string) => ({
  issuer,
  authorization_endpoint: `${issuer}/auth`,
  token_endpoint: 'https://tokens.sso.example/token',
  end_session_endpoint: `${issuer}/session/end`,
  code_challenge_methods_supported: ['S256'],
});

/** The broker with its person issuer `sso` at `iss`, and a console on it. */
function withConsole(iss: string, console: Record<string, unknown> = {}) {
  return (config: Record<string, unknown>) => {
    const issuers = (config.identity as { issuers: Record<string, unknown>[] }).issuers;
    issuers[1] = { ...issuers[1], issuer: iss, audiences: ['jit-broker', 'jit-console'] };
    config.console = { issuer: 'sso', clientId: 'jit-console', ...console };
  };
}

/** The shipped development configuration's console: dev-sso, with the development sign-in. */
function withDevSignIn(config: Record<string, unknown>) {
  const issuers = (config.identity as { issuers: Record<string, unknown>[] }).issuers;
  issuers.push({ name: 'dev-sso', kind: 'person', issuer: 'https://dev-sso.invalid', dev: { keyDir: join(String((config.signing as { keyDir: string }).keyDir), '..', 'dev-issuer') }, audiences: ['jit-broker', 'jit-console'], algorithms: ['ES256'], usernameClaim: 'preferred_username' });
  (config.roles as unknown[]).push({ role: 'approver', match: { issuer: 'dev-sso', claims: { groups: 'release-approvers' } } });
  config.console = { issuer: 'dev-sso', clientId: 'jit-console', devSignIn: true };
}

describe('GET /console', () => {
  it('serves a page with a strict Content-Security-Policy, no inline script and nothing from another origin', async () => {
    const sso = await discoveryServer(goodDocument);
    t = await startTestBroker({ configure: withConsole(sso.issuer) });
    for (const path of ['/console', '/console/', '/console/requests/01ABC', '/console/callback', '/console/audit']) {
      const page = await t.http.get(path);
      expect(page.status, path).toBe(200);
      expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
      expect(page.headers['content-security-policy']).toBe(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self' https://tokens.sso.example; form-action 'none'; base-uri 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'",
      );
      expect(page.headers['x-frame-options']).toBe('DENY');
      expect(page.headers['referrer-policy']).toBe('no-referrer');
      expect(page.headers['cache-control']).toBe('no-store');
      // Every script has a src on this origin; no inline handler, style or script.
      expect(page.text).not.toMatch(/<script(?![^>]*\ssrc="\/console\/assets\/)[^>]*>/);
      expect(page.text).not.toMatch(/\son[a-z]+=|\sstyle=|<style|javascript:/i);
      expect(page.text.match(/(?:src|href)="[^"]*"/g)?.every((ref) => /="\/console/.test(ref))).toBe(true);
    }
    const script = await t.http.get('/console/assets/main.js');
    expect(script.status).toBe(200);
    expect(script.headers['content-type']).toMatch(/^(text|application)\/javascript/);
    expect(script.text).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|localStorage|document\.cookie/);
    const escape = await t.http.get('/console/assets/..%2f..%2f..%2fpackage.json');
    expect(escape.status).toBeGreaterThanOrEqual(400);
    expect(escape.text).not.toContain('"dependencies"');
  });

  it('serves the page only with its headers: /console/assets has its scripts and stylesheet, not the page', async () => {
    t = await startTestBroker();
    for (const path of ['/console/assets/index.html', '/console/assets/%69ndex.html', '/console/assets/index.html%3F', '/console/assets/', '/console/assets/missing.js']) {
      const response = await t.http.get(path);
      expect(response.status, path).toBe(404);
      expect(response.text, path).not.toContain('/console/assets/main.js');
    }
    for (const path of ['/console/assets/main.js', '/console/assets/views.js', '/console/assets/console.css']) {
      const asset = await t.http.get(path);
      expect(asset.status, path).toBe(200);
      expect(asset.headers['content-security-policy'], path).toBe("default-src 'none'; frame-ancestors 'none'");
      expect(asset.headers['x-frame-options'], path).toBe('DENY');
    }
  });

  it('tells the page and jit login where to sign in, from the issuer\'s discovery document', async () => {
    const sso = await discoveryServer(goodDocument);
    t = await startTestBroker({ configure: withConsole(sso.issuer, { scopes: ['openid', 'groups'] }) });
    const config = await t.http.get('/console/config.json');
    expect(config.status).toBe(200);
    expect(config.headers['cache-control']).toBe('no-store');
    expect(config.body).toEqual({
      issuer: sso.issuer,
      client_id: 'jit-console',
      cli_client_id: 'jit-console',
      scopes: ['openid', 'groups'],
      discovery_url: `${sso.issuer}/.well-known/openid-configuration`,
      authorization_endpoint: `${sso.issuer}/auth`,
      token_endpoint: 'https://tokens.sso.example/token',
      end_session_endpoint: `${sso.issuer}/session/end`,
      development: false,
    });
    await t.http.get('/console/config.json');
    expect(sso.fetches).toBe(1); // kept, not fetched per page
  });

  it.each([
    ['names another issuer', (issuer: string) => ({ ...goodDocument(issuer), issuer: 'https://evil.example' })],
    ['has a plain-http token endpoint off this machine', (issuer: string) => ({ ...goodDocument(issuer), token_endpoint: 'http://sso.example/token' })],
    ['offers no S256 PKCE', (issuer: string) => ({ ...goodDocument(issuer), code_challenge_methods_supported: ['plain'] })],
  ])('refuses a discovery document that %s (503), and the page then fetches only from its own origin', async (_case, document) => {
    const sso = await discoveryServer(document);
    t = await startTestBroker({ configure: withConsole(sso.issuer) });
    const config = await t.http.get('/console/config.json');
    expect(config.status).toBe(503);
    expect(config.body.type).toBe('urn:jit-broker:problem:unavailable');
    expect((await t.http.get('/console')).headers['content-security-policy']).toContain("connect-src 'self';");
  });

  it('stops reading a discovery document past 256 KiB, sent without a length, and refuses it (503)', async () => {
    // Anyone may ask for /console/config.json: a huge document must not make the broker buffer it.
    const state = { written: 0, finished: false };
    const server = createServer(async (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.on('finish', () => (state.finished = true));
      let open = true;
      res.on('close', () => (open = false));
      while (open && state.written < 64 * 1024 * 1024) {
        state.written += 1024 * 1024;
        if (!res.write(Buffer.alloc(1024 * 1024, 0x20))) await new Promise((resolve) => res.once('drain', resolve).once('close', resolve));
      }
      res.end('{}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }));
    t = await startTestBroker({ configure: withConsole(`http://127.0.0.1:${(server.address() as AddressInfo).port}`) });
    expect((await t.http.get('/console/config.json')).status).toBe(503);
    expect(state.finished).toBe(false);
    expect(state.written).toBeLessThan(64 * 1024 * 1024);
  });

  it('says the console is not configured when it is not', async () => {
    t = await startTestBroker();
    expect((await t.http.get('/console')).status).toBe(200);
    const config = await t.http.get('/console/config.json');
    expect(config.status).toBe(404);
    expect(config.body.detail).toMatch(/not configured/);
  });

  it('adds no way in: the API still wants an identity token, and takes no cookie', async () => {
    t = await startTestBroker({ configure: withDevSignIn });
    expect((await t.http.get('/v1/approvals')).status).toBe(401);
    expect((await t.http.get('/v1/approvals').set('Cookie', 'session=1')).status).toBe(401);
    expect((await t.http.get('/console')).headers['set-cookie']).toBeUndefined();
  });
});

describe('console configuration', () => {
  const parse = (configure: (config: Record<string, unknown>) => void) => {
    const base = {
      issuer: 'http://broker.test',
      identity: {
        issuers: [
          { name: 'ci', kind: 'workload', issuer: 'https://ci.test', jwks: { keys: [{ kty: 'EC' }] }, audiences: ['jit-broker'], algorithms: ['ES256'] },
          { name: 'sso', kind: 'person', issuer: 'https://sso.test', jwks: { keys: [{ kty: 'EC' }] }, audiences: ['jit-broker', 'jit-console'], algorithms: ['ES256'] },
          { name: 'dev-sso', kind: 'person', issuer: 'https://dev-sso.invalid', dev: { keyDir: '/tmp/x' }, audiences: ['jit-console'], algorithms: ['ES256'] },
        ],
      },
    } as Record<string, unknown>;
    configure(base);
    try {
      parseConfig('test', base);
      return [];
    } catch (error) {
      return (error as ConfigError).problems;
    }
  };

  it('refuses the development sign-in for any issuer but a dev: one', () => {
    expect(parse((c) => (c.console = { issuer: 'sso', clientId: 'jit-console', devSignIn: true }))).toEqual([
      'console.devSignIn: DEVELOPMENT ONLY: the development sign-in signs only for a dev: issuer, and "sso" is a real one',
    ]);
  });

  it('refuses a client id its issuer would not accept in aud, a workload issuer, a dev issuer without the dev sign-in', () => {
    expect(parse((c) => (c.console = { issuer: 'sso', clientId: 'other', cliClientId: 'cli' }))).toEqual([
      'console.clientId: "other" is not one of issuer "sso"\'s audiences, so its ID tokens would be refused; add it there',
      'console.cliClientId: "cli" is not one of issuer "sso"\'s audiences, so its ID tokens would be refused; add it there',
    ]);
    expect(parse((c) => (c.console = { issuer: 'ci', clientId: 'jit-console' }))).toEqual(['console.issuer: "ci" is a workload issuer; people sign in with a person issuer']);
    expect(parse((c) => (c.console = { issuer: 'dev-sso', clientId: 'jit-console' }))[0]).toMatch(/^console.issuer: "dev-sso" is a dev: issuer/);
    expect(parse((c) => (c.console = { issuer: 'sso', clientId: 'jit-console', scopes: ['profile'] }))).toEqual(['console.scopes: must include openid']);
    expect(parse((c) => (c.console = { issuer: 'sso', clientId: 'jit-console' }))).toEqual([]);
  });
});

describe('the development sign-in', () => {
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const authorize = (redirect = 'http://127.0.0.1:5555/callback', extra: Record<string, string> = {}) =>
    new URLSearchParams({ response_type: 'code', client_id: 'jit-console', redirect_uri: redirect, scope: 'openid profile', state: 'st4te', nonce: 'n0nce', code_challenge: challenge, code_challenge_method: 'S256', ...extra });

  async function signIn(form: Record<string, string | string[]>, redirect?: string) {
    const params = Object.fromEntries(authorize(redirect));
    const response = await t!.http.post('/console/dev-sign-in/authorize').type('form').send({ ...params, ...form });
    expect(response.status).toBe(303);
    return new URL(response.headers.location as string);
  }

  const redeem = (code: string, overrides: Record<string, string> = {}) =>
    t!.http.post('/console/dev-sign-in/token').type('form').send({ grant_type: 'authorization_code', code, client_id: 'jit-console', redirect_uri: 'http://127.0.0.1:5555/callback', code_verifier: verifier, ...overrides });

  it('warns at start, and signs anyone in as the dev issuer with a PKCE-bound, single-use code', async () => {
    t = await startTestBroker({ configure: withDevSignIn });
    expect(t.logs.some((line) => line.includes('"level":"warn"') && line.includes('DEVELOPMENT SIGN-IN'))).toBe(true);

    const page = await t.http.get(`/console/dev-sign-in/authorize?${authorize()}`);
    expect(page.status, page.text).toBe(200);
    expect(page.text).toContain('DEVELOPMENT ONLY');
    expect(page.text).toContain('value="release-approvers"');
    expect(page.headers['content-security-policy']).toBe("default-src 'none'; style-src 'self'; form-action 'self' http://127.0.0.1:5555; base-uri 'none'; frame-ancestors 'none'");

    const back = await signIn({ username: 'alice', group: 'release-approvers', groups: 'auditors' });
    expect(`${back.origin}${back.pathname}`).toBe('http://127.0.0.1:5555/callback');
    expect(back.searchParams.get('state')).toBe('st4te');
    expect(back.searchParams.get('iss')).toBe('https://dev-sso.invalid');
    const code = back.searchParams.get('code') as string;

    expect((await redeem(code, { code_verifier: randomBytes(32).toString('base64url') })).body).toEqual({ error: 'invalid_grant', error_description: 'code_verifier does not match the code_challenge' });
    // A code is bound to its client and its redirect URI, as RFC 6749 section 4.1.3 says.
    const fresh = async () => (await signIn({ username: 'alice', group: 'release-approvers' })).searchParams.get('code') as string;
    expect((await redeem(await fresh(), { redirect_uri: 'http://127.0.0.1:6666/callback' })).body).toEqual({ error: 'invalid_grant', error_description: 'redirect_uri differs from the authorization request' });
    expect((await redeem(await fresh(), { client_id: 'someone' })).body).toEqual({ error: 'invalid_grant', error_description: 'the code was issued to another client' });
    // A failed redemption spends the code too.
    expect((await redeem(code)).body.error).toBe('invalid_grant');

    const good = await redeem((await signIn({ username: 'alice', group: ['release-approvers'] })).searchParams.get('code') as string);
    expect(good.status).toBe(200);
    const claims = decodeJwt(good.body.id_token);
    expect(claims).toMatchObject({ iss: 'https://dev-sso.invalid', aud: 'jit-console', sub: 'alice', preferred_username: 'alice', groups: ['release-approvers'], nonce: 'n0nce' });
    // The broker takes it as alice, an approver.
    expect((await t.http.get('/v1/approvals').set(bearer(good.body.id_token))).status).toBe(200);
    expect(t.logs.join('\n')).not.toContain(good.body.id_token.split('.')[2]);
  });

  it('redeems a code at another worker of the broker (the default start runs several), once there, and nothing it did not seal', async () => {
    t = await startTestBroker({ configure: withDevSignIn });
    // Another worker builds its own routes from the same configuration and the same dev key.
    const web = t.config.console as NonNullable<typeof t.config.console>;
    const other = express().use(devSignInRoutes({ config: t.config, console: web, logger: pino({ level: 'silent' }), clock: () => Date.now() }));
    const redeemAt = (code: string) =>
      supertest(other).post('/token').type('form').send({ grant_type: 'authorization_code', code, client_id: 'jit-console', redirect_uri: 'http://127.0.0.1:5555/callback', code_verifier: verifier });

    const code = (await signIn({ username: 'alice', group: 'release-approvers' })).searchParams.get('code') as string;
    const tampered = Buffer.from(code, 'base64url');
    tampered[20] = (tampered[20] as number) ^ 1;
    expect((await redeemAt(tampered.toString('base64url'))).body).toEqual({ error: 'invalid_grant', error_description: 'the code is unknown, spent or expired' });
    const good = await redeemAt(code);
    expect(good.status, JSON.stringify(good.body)).toBe(200);
    expect(decodeJwt(good.body.id_token)).toMatchObject({ sub: 'alice', aud: 'jit-console', nonce: 'n0nce' });
    expect((await redeemAt(code)).body.error).toBe('invalid_grant');
  });

  it('never redirects to a stranger, and reflects nothing it was sent as markup', async () => {
    t = await startTestBroker({ configure: withDevSignIn });
    const stranger = await t.http.get(`/console/dev-sign-in/authorize?${authorize('https://evil.example/callback')}`);
    expect(stranger.status).toBe(400);
    expect(stranger.headers.location).toBeUndefined();
    const unknownClient = await t.http.get(`/console/dev-sign-in/authorize?${authorize(undefined, { client_id: 'someone' })}`);
    expect(unknownClient.status).toBe(400);
    // Nor anywhere that only starts like an allowed one, or carries a fragment or user information.
    const callback = `${new URL(t.config.issuer).origin}/console/callback`;
    for (const redirect of [`${callback}x`, `${callback}/../../v1`, 'http://127.0.0.1:5555/callback#x', 'http://evil.example@127.0.0.1:5555/callback']) {
      const refused = await t.http.get(`/console/dev-sign-in/authorize?${authorize(redirect)}`);
      expect(refused.status, redirect).toBe(400);
      expect(refused.headers.location).toBeUndefined();
    }

    const hostile = await t.http.get(`/console/dev-sign-in/authorize?${authorize(undefined, { state: '"><script>alert(1)</script>' })}`);
    expect(hostile.status).toBe(200);
    expect(hostile.text).not.toContain('<script>');
    expect(hostile.text).toContain('&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;');

    const noPkce = await t.http.post('/console/dev-sign-in/authorize').type('form').send({ ...Object.fromEntries(authorize()), code_challenge_method: 'plain', username: 'alice' });
    expect(noPkce.status).toBe(303);
    expect(new URL(noPkce.headers.location as string).searchParams.get('error')).toBe('invalid_request');

    const badName = await t.http.post('/console/dev-sign-in/authorize').type('form').send({ ...Object.fromEntries(authorize()), username: '<b>x</b>' });
    expect(badName.status).toBe(400);
    expect(badName.text).not.toContain('<b>x</b>');
  });

  it('answers a refused authorization request on GET at the client\'s redirect URI, with its error and state', async () => {
    t = await startTestBroker({ configure: withDevSignIn });
    for (const [extra, error] of [
      [{ response_type: 'token' }, 'unsupported_response_type'],
      [{ scope: 'profile' }, 'invalid_scope'],
      [{ code_challenge_method: 'plain' }, 'invalid_request'],
    ] as const) {
      const refused = await t.http.get(`/console/dev-sign-in/authorize?${authorize(undefined, extra)}`);
      expect(refused.status, error).toBe(303);
      const back = new URL(refused.headers.location as string);
      expect(`${back.origin}${back.pathname}`).toBe('http://127.0.0.1:5555/callback');
      expect(back.searchParams.get('error')).toBe(error);
      expect(back.searchParams.get('state')).toBe('st4te');
      expect(back.searchParams.get('iss')).toBe('https://dev-sso.invalid');
    }
    // A redirect URI that is not acceptable hears of nothing, whatever else is wrong.
    const stranger = await t.http.get(`/console/dev-sign-in/authorize?${authorize('https://evil.example/callback', { response_type: 'token' })}`);
    expect(stranger.status).toBe(400);
    expect(stranger.headers.location).toBeUndefined();
    expect(t.logs.filter((line) => line.includes('"level":50'))).toEqual([]);
  });

  it('is its own discovery document, which the console\'s config points at', async () => {
    t = await startTestBroker({ configure: withDevSignIn });
    const config = (await t.http.get('/console/config.json').set('Host', '127.0.0.1:9090')).body;
    expect(config).toMatchObject({ issuer: 'https://dev-sso.invalid', development: true, discovery_url: 'http://127.0.0.1:9090/console/dev-sign-in/.well-known/openid-configuration' });
    const discovery = (await t.http.get('/console/dev-sign-in/.well-known/openid-configuration').set('Host', '127.0.0.1:9090')).body;
    expect(discovery).toMatchObject({
      issuer: 'https://dev-sso.invalid',
      authorization_endpoint: 'http://127.0.0.1:9090/console/dev-sign-in/authorize',
      token_endpoint: 'http://127.0.0.1:9090/console/dev-sign-in/token',
      code_challenge_methods_supported: ['S256'],
    });
  });

  it('answers only at this machine\'s own names or the broker\'s issuer: a page elsewhere re-pointed here (DNS rebinding) signs nobody in', async () => {
    t = await startTestBroker({ configure: withDevSignIn });
    const params = Object.fromEntries(authorize());
    for (const host of ['evil.example:8080', 'evil.example', '10.0.0.7:8080', '127.0.0.1.evil.example']) {
      const page = await t.http.get(`/console/dev-sign-in/authorize?${authorize()}`).set('Host', host);
      const form = await t.http.post('/console/dev-sign-in/authorize').set('Host', host).type('form').send({ ...params, username: 'alice' });
      const discovery = await t.http.get('/console/dev-sign-in/.well-known/openid-configuration').set('Host', host);
      for (const response of [page, form, discovery]) {
        expect(response.status, host).toBe(403);
        expect(response.headers.location).toBeUndefined();
      }
    }
    for (const host of ['localhost:8080', '127.0.0.1:9090', '[::1]:8080', new URL(t.config.issuer).host]) {
      expect((await t.http.get(`/console/dev-sign-in/authorize?${authorize()}`).set('Host', host)).status, host).toBe(200);
    }
  });

  it('answers its paths in another letter case 404, as any path that is no endpoint', async () => {
    t = await startTestBroker({ configure: withDevSignIn });
    expect((await t.http.get(`/console/dev-sign-in/authorize?${authorize()}`)).status).toBe(200);
    expect((await t.http.get(`/console/dev-sign-in/Authorize?${authorize()}`)).status).toBe(404);
    expect((await t.http.get(`/console/Dev-Sign-In/authorize?${authorize()}`)).status).toBe(404);
  });

  it('does not exist without devSignIn', async () => {
    t = await startTestBroker();
    expect((await t.http.get(`/console/dev-sign-in/authorize?${authorize()}`)).status).toBe(404);
    expect((await t.http.post('/console/dev-sign-in/token').type('form').send({ grant_type: 'authorization_code' })).status).toBe(404);
  });
});
