/**
 * The console's session, in a real browser against a real OpenID provider: what the page takes as
 * an ID token, what it does when the sign-in ends (expired, or refused), and how it draws text that
 * does not show. Its headers forbid framing, inline script and referrers on every path.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeJwt } from 'jose';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { bearer, liveClock, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { launchBrowser } from '../helpers/browser.js';
import { startTestSso, type TestSso } from '../helpers/sso.js';

const deploy = { task_id: 'deploy-7', scopes: ['model:deploy'], audience: 'registry.acme.internal', justification: 'release 7, see change 123' };
const ML_SUB = 'repo:acme/ml:ref:refs/heads/main';
/** Long enough to sign in on a loaded machine, short enough for a test to outlive. */
const ID_TOKEN_TTL = 8;

let browser: Browser;
let sso: TestSso;
let t: TestBroker;
let server: Server;
let brokerUrl: string;
let context: BrowserContext | undefined;

beforeAll(async () => {
  server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  brokerUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  sso = await startTestSso({ consoleOrigin: brokerUrl, idTokenTtl: ID_TOKEN_TTL, accounts: { alice: ['approvers', 'ml-release'] } });
  t = await startTestBroker({
    clock: liveClock(),
    configure(config) {
      config.issuer = brokerUrl;
      const issuers = (config.identity as { issuers: Record<string, unknown>[] }).issuers;
      issuers[0] = { ...issuers[0], bindClaims: ['run_id'] };
      issuers[1] = { name: 'sso', kind: 'person', issuer: sso.issuer, jwksUri: sso.jwksUri, audiences: ['jit-console', 'jit-cli'], algorithms: ['ES256'], usernameClaim: 'preferred_username' };
      config.console = { issuer: 'sso', clientId: 'jit-console', cliClientId: 'jit-cli', scopes: ['openid', 'profile', 'groups'] };
    },
  });
  server.on('request', t.broker.app);
  browser = await launchBrowser();
});

afterEach(async () => {
  await context?.close();
  context = undefined;
});

afterAll(async () => {
  await browser?.close();
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  await t?.close();
  await sso?.close();
});

const ml = (actor = 'pat', runId = 'run-1') =>
  t.issuers.ci.token(ML_SUB, { repository: 'acme/ml', ref: 'refs/heads/main', actor, run_id: runId }, { now: t.clock() });

async function pendingRequest(identity: string, body: Record<string, unknown> = deploy) {
  const response = await t.http.post('/v1/credentials').set(bearer(identity)).send(body);
  expect(response.status).toBe(202);
  return response.body as { request_id: string; digest: string };
}

async function signIn(path: string): Promise<{ page: Page; idTokens: string[]; callbacks: string[] }> {
  context = await browser.newContext();
  const page = await context.newPage();
  const idTokens: string[] = [];
  const callbacks: string[] = [];
  page.on('request', (r) => {
    if (r.url().startsWith(`${brokerUrl}/console/callback?`)) callbacks.push(r.url());
  });
  page.on('response', async (response) => {
    if (response.url().startsWith(`${sso.issuer}/token`) && response.request().method() === 'POST') {
      const body = (await response.json().catch(() => ({}))) as { id_token?: string };
      if (body.id_token) idTokens.push(body.id_token);
    }
  });
  await page.goto(`${brokerUrl}${path}`);
  await page.locator('input[name=login]').fill('alice');
  await page.locator('input[name=password]').fill('any password');
  await page.locator('button[type=submit]').click();
  await page.getByTestId('signed-in-as').waitFor();
  return { page, idTokens, callbacks };
}

const statusOf = async (id: string, runId: string) => (await t.http.get(`/v1/credentials/${id}`).set(bearer(await ml('pat', runId)))).body as { status: string; approvals: unknown[] };

describe('the console\'s session', () => {
  it('is served with a strict CSP on every path: no framing, no inline script, no referrer', async () => {
    for (const path of ['/console', '/console/', '/console/callback?code=x&state=y', '/console/signed-out', '/console/mine', '/console/audit', '/console/break-glass', '/console/requests/abc', '/console/requests/abc/']) {
      const r = await t.http.get(path);
      expect(r.status, path).toBe(200);
      const csp = r.headers['content-security-policy'] as string;
      expect(csp, path).toContain("frame-ancestors 'none'");
      expect(csp, path).toContain("script-src 'self'");
      expect(csp, path).not.toMatch(/unsafe-inline|unsafe-eval|\*/);
      expect(r.headers['x-frame-options'], path).toBe('DENY');
      expect(r.headers['referrer-policy'], path).toBe('no-referrer');
    }
  });

  it('signs nobody in from a replayed authorization response (the callback URL loaded again), and redeems nothing', async () => {
    const { page, callbacks } = await signIn('/console');
    expect(callbacks.length).toBe(1);
    const tokenPosts: string[] = [];
    page.on('request', (r) => {
      if (r.url().startsWith(`${sso.issuer}/token`)) tokenPosts.push(r.url());
    });
    await page.goto(callbacks[0] as string);
    const alert = page.getByRole('alert');
    await alert.waitFor();
    expect(await alert.textContent()).toBe('This sign-in link is not one this page started.');
    expect(tokenPosts).toEqual([]);
  });

  it('asks the person to sign in again when a decision is answered 401 (the token no longer accepted)', async () => {
    const pending = await pendingRequest(await ml('pat', 'run-401'));
    const { page } = await signIn(`/console/requests/${pending.request_id}`);
    await page.getByTestId('digest').waitFor();
    await page.route(`${brokerUrl}/v1/credentials/${pending.request_id}/approvals`, (route) =>
      route.fulfill({ status: 401, contentType: 'application/problem+json', body: JSON.stringify({ type: 'urn:x:invalid_token', title: 'x', status: 401, detail: 'expired' }) }),
    );
    await page.locator('#reason').fill('ok');
    await page.getByTestId('approve').click();
    // The page forgets the token and offers to sign in again, as any other view does.
    await page.getByTestId('sign-in').waitFor();
    expect(await page.getByRole('alert').textContent()).toBe('Your sign-in has expired or was not accepted.');
    expect(await page.getByTestId('signed-in-as').count()).toBe(0);
  });

  it('draws every character that does not show (fillers, variation selectors, CGJ) as a marker', async () => {
    const hidden = { '\u3164': 'U+3164', '\u115F': 'U+115F', '\u2800': 'U+2800', '\u034F': 'U+034F', '\uFE0F': 'U+FE0F', '\u200B': 'U+200B' };
    const justification = `ship it${Object.keys(hidden).map((c, i) => `${c}x${i}`).join('')}`;
    const response = await t.http.post('/v1/credentials').set(bearer(await ml('pat', 'run-inv'))).send({ ...deploy, task_id: 'deploy-\u3164', justification });
    expect(response.status).toBe(202);
    const { page } = await signIn(`/console/requests/${response.body.request_id}`);
    await page.getByTestId('justification').waitFor();
    const shown = (await page.getByTestId('justification').textContent()) as string;
    expect(await page.getByTestId('task').textContent()).toContain('U+3164');
    const missing = Object.entries(hidden).filter(([, marker]) => !shown.includes(marker)).map(([, m]) => m);
    expect(missing).toEqual([]);
  });

  it('keeps each value in its own field: combining marks stacked on one letter paint over no other field', async () => {
    // Hundreds of marks above one letter and below another: drawn as they come, they rise over
    // the task, the audience and the scopes, and hang over what follows.
    const above = '\u0301\u0302\u0303\u0304\u0306\u0307\u0308'.repeat(150);
    const below = '\u0316\u0317\u0318\u0319\u031c\u031d\u031e'.repeat(100);
    const plain = await pendingRequest(await ml('pat', 'run-marks'), { ...deploy, justification: 'release 7, see change 123 a b' });
    const stacked = await pendingRequest(await ml('pat', 'run-marks'), { ...deploy, justification: `release 7, see change 123 a${above} b${below}` });

    /** How each field around the justification looks, pixel for pixel. */
    const look = async (id: string) => {
      const { page } = await signIn(`/console/requests/${id}`);
      await page.getByTestId('justification').waitFor();
      const shots: Record<string, Buffer> = {};
      for (const field of ['requester', 'initiator', 'bound-claims', 'scopes', 'audience', 'task', 'approvals']) shots[field] = await page.getByTestId(field).screenshot();
      await context?.close();
      return shots;
    };
    const [clean, marked] = [await look(plain.request_id), await look(stacked.request_id)];
    const changed = Object.keys(clean).filter((field) => !(clean[field] as Buffer).equals(marked[field] as Buffer));
    expect(changed).toEqual([]);
  });

  for (const [what, change, message] of [
    ['another client', { aud: 'someone-else' }, 'The ID token is not for the console.'],
    ['another issuer', { iss: 'https://evil.example' }, 'The ID token names another issuer.'],
    ['another sign-in (nonce)', { nonce: 'replayed' }, 'The ID token does not answer this sign-in (nonce).'],
    ['no nonce', { nonce: undefined }, 'The ID token does not answer this sign-in (nonce).'],
    ['expired', { exp: 1000 }, 'The ID token has expired already.'],
  ] as const) {
    it(`refuses an ID token for ${what}`, async () => {
      context = await browser.newContext();
      const page = await context.newPage();
      await page.route(`${sso.issuer}/token`, async (route) => {
        const response = await route.fetch();
        const body = (await response.json()) as { id_token: string };
        const [h, p, sig] = body.id_token.split('.') as [string, string, string];
        const claims = { ...JSON.parse(Buffer.from(p, 'base64url').toString()), ...change };
        await route.fulfill({ response, json: { ...body, id_token: `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${sig}` } });
      });
      await page.goto(`${brokerUrl}/console`);
      await page.locator('input[name=login]').fill('alice');
      await page.locator('input[name=password]').fill('any password');
      await page.locator('button[type=submit]').click();
      const alert = page.getByRole('alert');
      await alert.waitFor();
      expect(await alert.textContent()).toBe(message);
      expect(await page.getByTestId('signed-in-as').count()).toBe(0);
    });
  }

  it('sends no decision once the ID token has expired mid-session, and asks to sign in again', async () => {
    const pending = await pendingRequest(await ml('pat', 'run-exp'));
    const { page, idTokens } = await signIn(`/console/requests/${pending.request_id}`);
    await page.getByTestId('digest').waitFor();
    const exp = decodeJwt(idTokens[0] as string).exp as number;
    const wait = exp * 1000 - Date.now() + 2000;
    expect(wait).toBeGreaterThan(0);
    await page.waitForTimeout(wait);
    expect(Date.now()).toBeGreaterThan(exp * 1000);
    await page.locator('#reason').fill('approving after my token expired');
    await page.getByTestId('approve').click();
    // Not sent: the page knows the token's exp, and asks to sign in again.
    await page.getByTestId('sign-in').waitFor();
    expect(await page.getByRole('alert').textContent()).toBe('Your sign-in has expired: sign in again to go on.');
    const after = await statusOf(pending.request_id, 'run-exp');
    expect(after.status).toBe('pending_approval');
    expect(after.approvals).toEqual([]);
  }, 40_000);
});
