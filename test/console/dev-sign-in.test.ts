import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { decodeJwt } from 'jose';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { createBroker, type Broker } from '../../src/broker.js';
import { parseConfig } from '../../src/config/index.js';
import { mintDevIdentityToken } from '../../src/identity/index.js';
import { createLogger } from '../../src/observability/index.js';
import { launchBrowser } from '../helpers/browser.js';

/**
 * The newcomer's walk on the shipped development configuration (config/broker.yaml), as
 * `npm ci && npm start` runs it: a pipeline asks for model:deploy, alice opens the console,
 * says who she is on the development sign-in, and approves; the pipeline collects its token.
 * With env CONSOLE_SCREENSHOT=FILE (`npm run docs:screenshot`), it also takes the README's
 * screenshot of the decision, just before alice approves.
 */

let dir: string;
let broker: Broker;
let server: Server;
let url: string;
let browser: Browser;
const logs: string[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'jit-console-walk-'));
  const raw = YAML.parse(readFileSync('config/broker.yaml', 'utf8')) as Record<string, unknown> & { identity: { issuers: { dev?: { keyDir: string } }[] }; signing: Record<string, unknown> };
  // The shipped file as it is, its files in a directory of the test's own.
  raw.database = join(dir, 'broker.db');
  raw.signing.keyDir = join(dir, 'keys');
  for (const issuer of raw.identity.issuers) if (issuer.dev) issuer.dev.keyDir = join(dir, 'dev-issuer');
  const logger = createLogger({ destination: { write: (line: string) => void logs.push(line) } });
  broker = await createBroker({ config: parseConfig('config/broker.yaml', raw), logger });
  server = createServer(broker.app);
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  browser = await launchBrowser();
});

afterAll(async () => {
  await browser?.close();
  server?.closeAllConnections();
  await new Promise((done) => server?.close(done));
  await broker?.close();
  rmSync(dir, { recursive: true, force: true });
});

const devIssuer = (name: string) => broker.config.identity.issuers.find((issuer) => issuer.name === name)!;

describe('the development sign-in, on the shipped configuration', () => {
  it('warns at start that anyone can sign in as anyone', () => {
    expect(logs.some((line) => line.includes('"level":"warn"') && line.includes('DEVELOPMENT SIGN-IN'))).toBe(true);
  });

  it('lets a newcomer approve a request as alice, and the pipeline collects its token', async () => {
    const pipeline = await mintDevIdentityToken(devIssuer('dev-ci'), {
      subject: 'repo:acme/ml:ref:refs/heads/main',
      claims: { ref: 'refs/heads/main', actor: 'bob' },
    });
    const asked = await fetch(`${url}/v1/credentials`, {
      method: 'POST',
      headers: { authorization: `Bearer ${pipeline}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        task_id: 'deploy-7',
        scopes: ['model:deploy'],
        audience: 'registry.acme.internal',
        justification: 'Release 7 of the ranking model, change 123',
        authorization_details: [{ type: 'model', identifier: 'ranking-v7' }],
      }),
    });
    expect(asked.status).toBe(202);
    const pending = (await asked.json()) as { request_id: string; digest: string };

    const context = await browser.newContext({ viewport: { width: 1100, height: 900 }, deviceScaleFactor: 1 });
    const page = await context.newPage();
    await page.goto(`${url}/console`);
    // The development sign-in: say who you are.
    await page.getByText('DEVELOPMENT ONLY').first().waitFor();
    await page.locator('#username').fill('alice');
    await page.locator('input[name=group][value=release-approvers]').check();
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByTestId('signed-in-as').waitFor();
    expect(await page.getByTestId('signed-in-as').textContent()).toBe('alice');

    const card = page.locator(`[data-request-id="${pending.request_id}"]`);
    expect(await card.getByTestId('initiator').textContent()).toBe('bob');
    await card.getByRole('link', { name: 'Review and decide' }).click();
    await page.locator('#reason').fill('Release 7 reviewed with the ML team');
    if (process.env.CONSOLE_SCREENSHOT) {
      const file = resolve(process.env.CONSOLE_SCREENSHOT);
      mkdirSync(dirname(file), { recursive: true });
      await page.screenshot({ path: file, fullPage: true });
    }
    await page.getByTestId('approve').click();
    await page.getByText('You approved it. The request is approved.').waitFor();
    await context.close();

    const collected = await fetch(`${url}/v1/credentials/${pending.request_id}/token`, { method: 'POST', headers: { authorization: `Bearer ${pipeline}` } });
    expect(collected.status).toBe(201);
    const token = ((await collected.json()) as { access_token: string }).access_token;
    expect(decodeJwt(token).approvers).toEqual([{ iss: 'https://dev-sso.invalid', sub: 'alice', at: expect.any(String) }]);
  });
});
