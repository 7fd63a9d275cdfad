import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeJwt } from 'jose';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { AGENTS_ISS, bearer, liveClock, startTestBroker, withAgents, type TestBroker } from '../helpers/broker.js';
import { createTestIssuer, type TestIssuer } from '../helpers/issuer.js';
import { launchBrowser } from '../helpers/browser.js';
import { startReceiver } from '../helpers/receiver.js';
import { startTestSso, type TestSso } from '../helpers/sso.js';

/**
 * The console in a real browser (headless Chromium), against the real broker on a loopback port
 * and a real OpenID provider as the SSO. One browser for the file; each test a fresh context
 * (no cookie, no storage), so each person signs in anew.
 */

const deploy = { task_id: 'deploy-7', scopes: ['model:deploy'], audience: 'registry.acme.internal', justification: 'release 7, see change 123' };
const ML_SUB = 'repo:acme/ml:ref:refs/heads/main';

let browser: Browser;
let sso: TestSso;
let t: TestBroker;
let server: Server;
let brokerUrl: string;
let receiver: Awaited<ReturnType<typeof startReceiver>>;
let agents: TestIssuer;
let context: BrowserContext | undefined;

beforeAll(async () => {
  // The broker's address first: the SSO registers the console's redirect URI on it.
  server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  brokerUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  receiver = await startReceiver();
  agents = await createTestIssuer(AGENTS_ISS);
  sso = await startTestSso({
    consoleOrigin: brokerUrl,
    accounts: { alice: ['approvers', 'ml-release'], olga: ['on-call'], bob: ['approvers', 'ml-release'], ivy: ['auditors'] },
  });
  t = await startTestBroker({
    clock: liveClock(),
    configure(config) {
      config.issuer = brokerUrl;
      const issuers = (config.identity as { issuers: Record<string, unknown>[] }).issuers;
      issuers[0] = { ...issuers[0], bindClaims: ['run_id'] };
      // The person issuer is the real OpenID provider: people sign in there.
      issuers[1] = {
        name: 'sso',
        kind: 'person',
        issuer: sso.issuer,
        jwksUri: sso.jwksUri,
        audiences: ['jit-console', 'jit-cli'],
        algorithms: ['ES256'],
        usernameClaim: 'preferred_username',
      };
      config.console = { issuer: 'sso', clientId: 'jit-console', cliClientId: 'jit-cli', scopes: ['openid', 'profile', 'groups'] };
      config.notify = { webhooks: [{ url: receiver.url('/hook'), events: ['approval.requested'] }] };
      // One job asks more than a page of approvals' worth (the paging test).
      config.limits = { pendingRequests: 200 };
      // A deploying agent, acting for the ML pipeline.
      withAgents(config, agents);
      (config.delegation as { rules: unknown[] }).rules.push({
        id: 'deploy-agent',
        actor: { issuer: 'agents', subject: 'agent:deployer-*' },
        for: { issuer: 'ci', subject: 'repo:acme/ml:*' },
        scopes: ['model:deploy'],
      });
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
  await receiver?.close();
});

/** A CI job of acme/ml on main, run `runId`, started by `actor`. */
const ml = (actor = 'pat', runId = 'run-1', sub = ML_SUB) =>
  t.issuers.ci.token(sub, { repository: 'acme/ml', ref: 'refs/heads/main', actor, run_id: runId }, { now: t.clock() });

async function pendingRequest(identity: string, body: Record<string, unknown> = deploy) {
  const response = await t.http.post('/v1/credentials').set(bearer(identity)).send(body);
  expect(response.status).toBe(202);
  return response.body as { request_id: string; digest: string };
}

interface Session {
  page: Page;
  /** Every ID token the SSO handed this page. */
  idTokens: string[];
  /** Every request the page made: URL and Authorization header. */
  requests: { url: string; authorization: string | undefined }[];
  /** Console messages and page errors (CSP violations show here). */
  messages: string[];
}

/** A new browser context; `login` signs in at the SSO's login form, starting at `path`. */
async function signIn(login: string, path = '/console', options: { acceptDownloads?: boolean } = {}): Promise<Session> {
  context = await browser.newContext({ acceptDownloads: options.acceptDownloads ?? false });
  const page = await context.newPage();
  const session: Session = { page, idTokens: [], requests: [], messages: [] };
  page.on('request', (request) => session.requests.push({ url: request.url(), authorization: request.headers().authorization }));
  page.on('response', async (response) => {
    if (response.url().startsWith(`${sso.issuer}/token`) && response.request().method() === 'POST') {
      const body = (await response.json().catch(() => ({}))) as { id_token?: string };
      if (body.id_token) session.idTokens.push(body.id_token);
    }
  });
  page.on('console', (message) => session.messages.push(message.text()));
  page.on('pageerror', (error) => session.messages.push(String(error)));
  page.on('dialog', (dialog) => {
    session.messages.push(`dialog: ${dialog.message()}`);
    void dialog.dismiss();
  });

  await page.goto(`${brokerUrl}${path}`);
  await page.locator('input[name=login]').fill(login);
  await page.locator('input[name=password]').fill('any password');
  await page.locator('button[type=submit]').click();
  await page.getByTestId('signed-in-as').waitFor();
  expect(await page.getByTestId('signed-in-as').textContent()).toBe(login);
  return session;
}

/** The request as its own job sees it. */
const statusOf = async (id: string, actor: string, runId: string) => (await t.http.get(`/v1/credentials/${id}`).set(bearer(await ml(actor, runId)))).body as { status: string; approvals: unknown[] };

describe('the console', () => {
  it('lets an approver sign in, see a pending request with its job initiator, approve it; the waiting workload collects', async () => {
    const workload = await ml('pat', 'run-1');
    const pending = await pendingRequest(workload);
    const { page, requests, idTokens, messages } = await signIn('alice');

    const card = page.locator(`[data-request-id="${pending.request_id}"]`);
    await card.waitFor();
    expect(await card.getByTestId('requester').textContent()).toContain(ML_SUB);
    expect(await card.getByTestId('initiator').textContent()).toBe('pat');
    expect(await card.getByTestId('bound-claims').textContent()).toBe('run_id = run-1');
    expect(await card.getByTestId('justification').textContent()).toBe('release 7, see change 123');
    expect(await card.getByTestId('approvals').textContent()).toBe('0 of 1');
    expect(await card.getByTestId('expires').textContent()).toMatch(/^in \d+ minutes/);

    await card.getByRole('link', { name: 'Review and decide' }).click();
    await page.waitForURL(`${brokerUrl}/console/requests/${pending.request_id}`);
    expect(await page.getByTestId('digest').textContent()).toBe(pending.digest);
    // A submit that names no decision (a script's requestSubmit(), no button pressed) decides nothing.
    await page.locator('#reason').fill('scripted');
    await page.locator('form[aria-label="Decision"]').evaluate((form) => (form as unknown as { requestSubmit(): void }).requestSubmit());
    await page.locator('#reason').fill('release 7 reviewed');
    await page.getByTestId('approve').click();
    await page.getByText('You approved it. The request is approved.').waitFor();
    expect(await page.getByTestId('status').textContent()).toBe('approved');
    const decided = (await statusOf(pending.request_id, 'pat', 'run-1')).approvals as { reason: string }[];
    expect(decided.map((a) => a.reason)).toEqual(['release 7 reviewed']);

    // The workload that waited collects its token, approved by alice at the SSO.
    const collected = await t.http.post(`/v1/credentials/${pending.request_id}/token`).set(bearer(workload));
    expect(collected.status).toBe(201);
    expect(decodeJwt(collected.body.access_token as string).approvers).toEqual([{ iss: sso.issuer, sub: 'alice', at: expect.any(String) }]);

    // The console used the API as every client does: the ID token in the Authorization header.
    const api = requests.filter((r) => new URL(r.url).pathname.startsWith('/v1/'));
    expect(api.length).toBeGreaterThan(0);
    expect(api.every((r) => r.authorization === `Bearer ${idTokens[0]}`)).toBe(true);
    expect(requests.some((r) => r.url.includes(idTokens[0] as string))).toBe(false);
    expect(messages.filter((m) => /Content.Security.Policy|Trusted Type/i.test(m))).toEqual([]);
  });

  it('shows an approver who started the job the broker\'s refusal, at the link the webhook carried', async () => {
    const pending = await pendingRequest(await ml('bob', 'run-2'));
    await t.broker.notifier.idle();
    const delivery = receiver.deliveries.find((d) => d.body.request_id === pending.request_id);
    expect(delivery?.body.url).toBe(`${brokerUrl}/console/requests/${pending.request_id}`);

    const { page } = await signIn('bob', new URL(delivery?.body.url as string).pathname);
    await page.waitForURL(`${brokerUrl}/console/requests/${pending.request_id}`);
    expect(await page.getByTestId('initiator').textContent()).toBe('bob');
    await page.locator('#reason').fill('looks fine to me');
    await page.getByTestId('approve').click();
    const refusal = page.getByRole('alert');
    await refusal.waitFor();
    expect(await refusal.textContent()).toBe('Separation of duties: the person who started the requesting job cannot decide its request.');
    expect((await statusOf(pending.request_id, 'bob', 'run-2')).status).toBe('pending_approval');

    // Nor is it among what bob may decide.
    await page.getByRole('link', { name: 'Decide' }).click();
    await page.getByRole('heading', { name: 'Awaiting your decision' }).waitFor();
    expect(await page.locator(`[data-request-id="${pending.request_id}"]`).count()).toBe(0);
  });

  it('shows who acts for whom: the agent acting for the pipeline, in the card and in the webhook', async () => {
    const asked = await t.http.post('/oauth2/token').type('form').send({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: await ml('pat', 'run-9'),
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      actor_token: await agents.token('agent:deployer-1', { owner: 'olivia' }, { now: t.clock() }),
      actor_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      scope: 'model:deploy',
      audience: 'registry.acme.internal',
      task_id: 'agent deploy',
    });
    expect(asked.body.error).toBe('authorization_pending');
    await t.broker.notifier.idle();
    const delivery = receiver.deliveries.find((d) => d.body.request_id === asked.body.request_id);
    expect(delivery?.body.act).toEqual({ iss: AGENTS_ISS, sub: 'agent:deployer-1' });

    const { page } = await signIn('alice');
    const card = page.locator(`[data-request-id="${asked.body.request_id}"]`);
    await card.waitFor();
    expect(await card.getByTestId('requester').textContent()).toContain(ML_SUB);
    expect(await card.getByTestId('act').textContent()).toBe(`agent:deployer-1 (${AGENTS_ISS})`);
  });

  it('renders hostile text from a request as inert text: markup, script and bidi overrides', async () => {
    const hostile = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script> ship it\u200f';
    const sub = `${ML_SUB}\u202egpj.exe`;
    const pending = await pendingRequest(await ml('pat', 'run-\u202e3', sub), { ...deploy, justification: hostile });
    // The API refuses bidi overrides in justifications; one that got into the store some other
    // way (an older broker, a restore) must still be drawn inert.
    await t.db.sql('UPDATE requests SET task_id = ? WHERE id = ?', ['deploy-\u202e7', pending.request_id]);

    const { page, messages } = await signIn('alice', `/console/requests/${pending.request_id}`);
    await page.getByTestId('justification').waitFor();
    expect(await page.getByTestId('justification').textContent()).toBe('<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script> ship itU+200F');
    expect(await page.getByTestId('requester').textContent()).toContain(`${ML_SUB}U+202Egpj.exe`);
    expect(await page.getByTestId('bound-claims').textContent()).toBe('run_id = run-U+202E3');
    expect(await page.getByTestId('task').textContent()).toBe('deploy-U+202E7');

    const app = page.locator('#app');
    expect(await app.locator('img, script').count()).toBe(0);
    expect(await page.evaluate('typeof window.__pwned')).toBe('undefined');
    // No invisible character reaches the page: each is a visible marker, inside an isolated run.
    expect(await app.evaluate((element) => /[\u200e\u200f\u202a-\u202e\u2066-\u2069]/.test(element.textContent ?? ''))).toBe(false);
    expect(await page.getByTestId('task').locator('bdi.value .escape').textContent()).toBe('U+202E');
    expect(messages.filter((m) => m.startsWith('dialog'))).toEqual([]);
  });

  it('draws each object, actor and job claim as an entry of its own and each value boxed apart, so different lists never read alike', async () => {
    // Pairs of views the old rendering drew alike: one entry whose value holds a separator,
    // against two entries.
    const one = await pendingRequest(await ml('pat', 'run-11'));
    const two = await pendingRequest(await ml('pat', 'run-12'));
    const views: Record<string, Record<string, unknown>> = {
      [one.request_id]: {
        authorization_details: [
          { type: 'model', identifier: 'fraud-v1; model fraud-v2' },
          { type: 'model', identifier: 'churn-v1', actions: ['read write'] },
        ],
        act: { iss: AGENTS_ISS, sub: 'agent:a (x), for agent:b' },
        bound_claims: { run_id: 'run-1, attempt = 2' },
      },
      [two.request_id]: {
        authorization_details: [
          { type: 'model', identifier: 'fraud-v1' },
          { type: 'model', identifier: 'fraud-v2' },
          { type: 'model', identifier: 'churn-v1', actions: ['read', 'write'] },
        ],
        act: { iss: AGENTS_ISS, sub: 'agent:a', act: { iss: 'x', sub: 'agent:b' } },
        bound_claims: { run_id: 'run-1', attempt: '2' },
      },
    };
    const { page } = await signIn('alice');
    await page.route(
      (url) => url.pathname === '/v1/approvals',
      async (route) => {
        const response = await route.fetch();
        const list = (await response.json()) as { items: { request_id: string }[] };
        await route.fulfill({ response, json: { ...list, items: list.items.map((item) => ({ ...item, ...views[item.request_id] })) } });
      },
    );
    await page.getByRole('link', { name: 'My requests' }).click();
    await page.getByRole('link', { name: 'Decide' }).click();

    /** What a reader sees of a field: its entries, each the values boxed in it. */
    const seen = async (id: string, field: string) => {
      const card = page.locator(`[data-request-id="${id}"]`);
      await card.waitFor();
      const items = card.getByTestId(field).locator('li');
      return Promise.all((await items.all()).map((item) => item.locator('code.chip').allTextContents()));
    };
    expect(await seen(one.request_id, 'objects')).toEqual([['model', 'fraud-v1; model fraud-v2'], ['model', 'churn-v1', 'read write']]);
    expect(await seen(two.request_id, 'objects')).toEqual([['model', 'fraud-v1'], ['model', 'fraud-v2'], ['model', 'churn-v1', 'read', 'write']]);
    expect(await seen(one.request_id, 'act')).toEqual([['agent:a (x), for agent:b']]);
    expect(await seen(two.request_id, 'act')).toEqual([['agent:a'], ['agent:b']]);
    expect(await seen(one.request_id, 'bound-claims')).toEqual([['run_id', 'run-1, attempt = 2']]);
    expect(await seen(two.request_id, 'bound-claims')).toEqual([['run_id', 'run-1'], ['attempt', '2']]);
    expect(await page.locator(`[data-request-id="${one.request_id}"]`).getByTestId('initiator').locator('code.chip').allTextContents()).toEqual(['pat']);
  });

  it('sends the digest of the request as viewed, so a decision on a view that is not the request is refused', async () => {
    const pending = await pendingRequest(await ml('pat', 'run-4'));
    context = await browser.newContext();
    const { page } = await signInWithView(pending.request_id, (view) => ({ ...view, justification: 'a harmless change', digest: 'f'.repeat(64) }));
    expect(await page.getByTestId('digest').textContent()).toBe('f'.repeat(64));
    await page.locator('#reason').fill('harmless');
    await page.getByTestId('approve').click();
    const refusal = page.getByRole('alert');
    await refusal.waitFor();
    expect(await refusal.textContent()).toBe('The digest does not match this request: review it again and decide on what it is now.');
    const after = await statusOf(pending.request_id, 'pat', 'run-4');
    expect(after.status).toBe('pending_approval');
    expect(after.approvals).toEqual([]);
  });

  it('shows an issuer\'s refusal only for a sign-in this page started, never text from a link it did not', async () => {
    const lure = 'Your account is locked. Call IT at +1-555-0100';
    context = await browser.newContext();
    const page = await context.newPage();
    for (const query of [`error=access_denied&error_description=${encodeURIComponent(lure)}`, `error=${encodeURIComponent(lure)}&state=guessed`]) {
      await page.goto(`${brokerUrl}/console/callback?${query}`);
      const alert = page.getByRole('alert');
      await alert.waitFor();
      expect(await alert.textContent()).toBe('This sign-in link is not one this page started.');
      expect(await page.locator('body').textContent()).not.toContain('Call IT');
    }

    // The issuer refuses a sign-in this page did start: its answer carries the page's state.
    const { authorization_endpoint: authorize } = (await t.http.get('/console/config.json')).body as { authorization_endpoint: string };
    await page.route(
      (url) => url.href.startsWith(`${authorize}?`),
      (route) => {
        const state = new URL(route.request().url()).searchParams.get('state') as string;
        const back = new URLSearchParams({ error: 'access_denied', error_description: 'You are not allowed to use this application.', state, iss: sso.issuer });
        return route.fulfill({ status: 302, headers: { location: `${brokerUrl}/console/callback?${back}` } });
      },
    );
    await page.goto(`${brokerUrl}/console`);
    await page.getByText('The sign-in issuer refused').waitFor();
    expect(await page.getByRole('alert').textContent()).toBe('The sign-in issuer refused: You are not allowed to use this application.');
  });

  it('signs out leaving no token anywhere: storage, cookies, IndexedDB, the URL, the history', async () => {
    const pending = await pendingRequest(await ml('pat', 'run-5'));
    const { page, idTokens } = await signIn('alice', `/console/requests/${pending.request_id}`);
    await page.getByTestId('digest').waitFor();
    const [idToken] = idTokens;
    expect(idToken).toMatch(/^eyJ/);
    const signature = (idToken as string).split('.')[2] as string;

    await page.getByTestId('sign-out').click();
    await page.waitForURL(`${brokerUrl}/console/signed-out`);
    await page.getByRole('heading', { name: 'You have signed out' }).waitFor();

    // Run in the page (a string: this file is compiled without the DOM's types).
    const storage = (await page.evaluate(`(async () => ({
      local: JSON.stringify({ ...localStorage }),
      session: JSON.stringify({ ...sessionStorage }),
      cookie: document.cookie,
      databases: (await indexedDB.databases()).map((db) => db.name),
      url: location.href,
      html: document.documentElement.outerHTML,
    }))()`)) as { local: string; session: string; cookie: string; databases: string[]; url: string; html: string };
    expect(storage).toEqual({ local: '{}', session: '{}', cookie: '', databases: [], url: `${brokerUrl}/console/signed-out`, html: expect.any(String) });
    expect(storage.html).not.toContain(signature);
    const cookies = await page.context().cookies();
    expect(cookies.filter((cookie) => cookie.value.includes(signature) || cookie.value.startsWith('eyJ'))).toEqual([]);
    expect(cookies.filter((cookie) => cookie.domain === '127.0.0.1' && new URL(brokerUrl).port && cookie.path.startsWith('/console'))).toEqual([]);

    const cdp = await page.context().newCDPSession(page);
    const { entries } = (await cdp.send('Page.getNavigationHistory')) as { entries: { url: string }[] };
    expect(entries.length).toBeGreaterThan(1);
    expect(entries.filter((entry) => entry.url.includes(signature) || /[?&#](id_token|access_token|code)=/.test(entry.url.replace(sso.issuer, '')) && entry.url.startsWith(brokerUrl))).toEqual([]);

    // And the broker no longer hears from this page as alice: the next view asks to sign in.
    await page.getByTestId('sign-in').waitFor();
  });

  it('lets an approver review a break-glass grant', async () => {
    const used = await t.http
      .post('/v1/credentials')
      .set(bearer(await ml('pat', 'run-6')))
      .send({ ...deploy, task_id: 'incident-99', break_glass: true, justification: 'registry down since 03:10, rolling back model 41' });
    expect(used.status).toBe(201);
    const { page } = await signIn('alice');
    const card = page.locator(`[data-request-id="${used.body.request_id}"]`);
    await card.getByRole('link', { name: 'Open' }).click();
    await page.locator('#outcome').selectOption('justified');
    await page.locator('#notes').fill('matches incident 99');
    await page.getByTestId('review').click();
    await page.getByText('Your review is recorded.').waitFor();
    const view = (await t.http.get(`/v1/credentials/${used.body.request_id}`).set(bearer(await ml('pat', 'run-6')))).body;
    expect(view.review).toMatchObject({ status: 'done', outcome: 'justified', notes: 'matches incident 99', reviewer: { iss: sso.issuer, sub: 'alice' } });
  });

  it('shows a person their own requests and their state', async () => {
    const { page, idTokens } = await signIn('olga', '/console/mine');
    const asked = await t.http
      .post('/v1/credentials')
      .set(bearer(idTokens[0] as string))
      .send({ task_id: 'read-logs-12', scopes: ['logs:read'], audience: 'logs.acme.internal' });
    expect(asked.status).toBe(201);
    await page.getByRole('link', { name: 'Decide' }).click();
    await page.getByRole('link', { name: 'My requests' }).click();
    const row = page.locator(`tr[data-request-id="${asked.body.request_id}"]`);
    await row.waitFor();
    expect(await row.getByText('read-logs-12').count()).toBe(1);
    expect(await row.getByTestId('status').textContent()).toBe('issued');
  });

  it('shows an auditor the chain\'s status and the issuances, and exports them', async () => {
    const issued = await t.http
      .post('/v1/credentials')
      .set(bearer(await t.issuers.ci.token('repo:acme/app:ref:refs/heads/main', { repository: 'acme/app', actor: 'pat', run_id: 'run-7' }, { now: t.clock() })))
      .send({ task_id: 'build-42', scopes: ['artifacts:read'], audience: 'registry.acme.internal' });
    expect(issued.status).toBe(201);
    const { page } = await signIn('ivy', '/console/audit', { acceptDownloads: true });
    expect(await page.getByTestId('verify').textContent()).toMatch(/^The audit chain verifies: \d+ events/);
    await page.locator('input[name=subject]').fill('repo:acme/app:ref:refs/heads/main');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.getByTestId('issuances').getByText('build-42').waitFor();
    // The requester with its issuer: the same sub at another issuer is someone else.
    expect(await page.getByTestId('issuances').locator('tr', { hasText: 'build-42' }).textContent()).toContain(`repo:acme/app:ref:refs/heads/main (${t.issuers.ci.iss})`);

    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export CSV' }).click()]);
    expect(download.suggestedFilename()).toBe('issuances.csv');
    const { readFile } = await import('node:fs/promises');
    const csv = await readFile(await download.path(), 'utf8');
    expect(csv).toContain(issued.body.request_id);
    expect(csv).not.toContain(issued.body.access_token);
  });

  it('shows each issuance\'s objects and actor chain to an auditor, and filters by them', async () => {
    await t.http
      .post('/v1/credentials')
      .set(bearer(await t.issuers.ci.token('repo:acme/app:ref:refs/heads/main', { repository: 'acme/app', actor: 'pat', run_id: 'run-8' }, { now: t.clock() })))
      .send({ task_id: 'build-43', scopes: ['artifacts:read'], audience: 'registry.acme.internal' });
    await context?.close();
    context = await browser.newContext();
    const page = await context.newPage();
    // What an issuance row carries for a delegated request naming an object (CONTRACT section 4).
    await page.route((url) => url.pathname === '/v1/audit/issuances', async (route) => {
      const response = await route.fetch();
      const body = (await response.json()) as { items: Record<string, unknown>[] };
      body.items = body.items.map((item) => ({
        ...item,
        authorization_details: [{ type: 'model', identifier: 'fraud-v1; model fraud-v2', actions: ['read write'] }],
        act: { iss: 'https://agents.test', sub: 'agent:release-1', act: { iss: 'https://agents.test', sub: 'agent:planner' } },
      }));
      await route.fulfill({ response, json: body });
    });
    await page.goto(`${brokerUrl}/console/audit`);
    await page.locator('input[name=login]').fill('ivy');
    await page.locator('input[name=password]').fill('any password');
    await page.locator('button[type=submit]').click();
    await page.getByTestId('verify').waitFor();
    for (const filter of ['type', 'identifier', 'actor']) expect(await page.locator(`input[name=${filter}]`).count()).toBe(1);
    await page.locator('input[name=subject]').fill('repo:acme/app:ref:refs/heads/main');
    await page.getByRole('button', { name: 'Filter' }).click();
    const row = page.getByTestId('issuances').locator('tr', { hasText: 'build-43' });
    await row.waitFor();
    expect(await row.getByTestId('object').allTextContents()).toEqual([expect.stringContaining('fraud-v1; model fraud-v2')]);
    expect(await row.getByTestId('actor').count()).toBe(2);
  });

  // Last: it leaves a hundred requests pending, which earlier tests' pages would have to page through.
  it('brings every pending request within reach, a page at a time', async () => {
    const job = await ml('pat', 'run-paging');
    const asked = new Set<string>();
    for (let i = 0; i < 101; i += 1) asked.add((await pendingRequest(job, { ...deploy, task_id: `paging-${i}` })).request_id);
    const { page } = await signIn('bob');
    const cards = page.getByTestId('request');
    await cards.first().waitFor();
    const first = await cards.count();
    expect(first).toBe(100);
    await page.getByTestId('more').click();
    await expect.poll(() => cards.count()).toBeGreaterThan(first);
    while ((await page.getByTestId('more').count()) > 0) {
      const before = await cards.count();
      await page.getByTestId('more').click();
      await expect.poll(async () => (await cards.count()) > before || (await page.getByTestId('more').count()) === 0).toBe(true);
    }
    const shown = new Set(await cards.evaluateAll((elements) => elements.map((element) => element.getAttribute('data-request-id'))));
    for (const id of asked) expect(shown.has(id)).toBe(true);
  });

  it('asks to sign in again when the next page is refused 401 (the sign-in no longer accepted)', async () => {
    const { page } = await signIn('bob'); // the hundred and one requests of the test before wait still
    await page.getByTestId('request').first().waitFor();
    await page.route(/\/v1\/approvals\?.*cursor=/, (route) => route.fulfill({ status: 401, contentType: 'application/problem+json', body: '{"status":401}' }));
    await page.getByTestId('more').click();
    await page.getByTestId('sign-in').waitFor();
    expect(await page.getByTestId('signed-in-as').count()).toBe(0);
  });
});

/** Signs alice in, with the request's view as the page receives it rewritten by `rewrite`. */
async function signInWithView(id: string, rewrite: (view: Record<string, unknown>) => Record<string, unknown>) {
  await context?.close();
  context = await browser.newContext();
  const page = await context.newPage();
  await page.route(`${brokerUrl}/v1/credentials/${id}`, async (route) => {
    const response = await route.fetch();
    await route.fulfill({ response, json: rewrite((await response.json()) as Record<string, unknown>) });
  });
  await page.goto(`${brokerUrl}/console/requests/${id}`);
  await page.locator('input[name=login]').fill('alice');
  await page.locator('input[name=password]').fill('any password');
  await page.locator('button[type=submit]').click();
  await page.getByTestId('digest').waitFor();
  return { page };
}
