import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { CliIo } from '../../src/cli/io.js';
import { run } from '../../src/cli/run.js';
import { bearer, listen, liveClock, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { launchBrowser } from '../helpers/browser.js';
import { startTestSso, type TestSso } from '../helpers/sso.js';

/**
 * `jit login` against a real OpenID provider (a browser signs in where the CLI says, and the
 * provider redirects it to the CLI's loopback listener) and against the development sign-in
 * (driven over plain HTTP, as a browser's form post would). `jit logout` forgets.
 */

let browser: Browser;
let sso: TestSso;
let dir: string;
const cleanup: (() => Promise<void>)[] = [];

beforeAll(async () => {
  sso = await startTestSso({ consoleOrigin: 'http://127.0.0.1:1', accounts: { alice: ['approvers'] } });
  browser = await launchBrowser();
});
afterAll(async () => {
  await browser?.close();
  await sso?.close();
});
afterEach(async () => {
  while (cleanup.length > 0) await cleanup.pop()?.();
  rmSync(dir, { recursive: true, force: true });
});

/** Runs `jit args...` in-process; `onUrl` is called with the sign-in address once the CLI prints it. */
function jit(args: string[], env: NodeJS.ProcessEnv, onUrl: (url: string) => Promise<void> = async () => undefined) {
  const out = { stdout: '', stderr: '' };
  let driving: Promise<void> | undefined;
  const io: CliIo = {
    stdout: (text) => void (out.stdout += text),
    stderr: (text) => {
      out.stderr += text;
      const url = /^ {2}(https?:\/\/\S+)$/m.exec(text)?.[1];
      if (url && !driving) driving = onUrl(url);
    },
    interactive: false,
    stdoutTerminal: false,
    env,
    readStdin: () => '',
    confirm: async () => false,
    fetch: (input, init) => fetch(input, init),
    sleep: async () => undefined,
    now: () => Date.now(),
  };
  return run(args, io).then(async (code) => {
    await driving;
    return { code, ...out };
  });
}

async function brokerWith(configure: (config: Record<string, unknown>) => void): Promise<{ t: TestBroker; url: string }> {
  dir = mkdtempSync(join(tmpdir(), 'jit-login-'));
  const t = await startTestBroker({ clock: liveClock(), configure });
  const served = await listen(t);
  cleanup.push(() => t.close(), () => served.close());
  return { t, url: served.url };
}

const env = () => ({ JIT_CONFIG_DIR: join(dir, 'config', 'jit'), HOME: dir });

describe('jit login', () => {
  it('signs in at the SSO the broker names, through a loopback redirect, and keeps the ID token in a 0600 file', async () => {
    const { t, url } = await brokerWith((config) => {
      const issuers = (config.identity as { issuers: Record<string, unknown>[] }).issuers;
      issuers[1] = { name: 'sso', kind: 'person', issuer: sso.issuer, jwksUri: sso.jwksUri, audiences: ['jit-console', 'jit-cli'], algorithms: ['ES256'], usernameClaim: 'preferred_username' };
      config.console = { issuer: 'sso', clientId: 'jit-console', cliClientId: 'jit-cli', scopes: ['openid', 'profile', 'groups'] };
    });
    const context = await browser.newContext();
    cleanup.push(() => context.close());
    let landed = '';
    // The config dir is there already, open to others: the login makes it private before writing.
    mkdirSync(env().JIT_CONFIG_DIR, { recursive: true });
    chmodSync(env().JIT_CONFIG_DIR, 0o755);

    const result = await jit(['login', '--broker', url], env(), async (signInUrl) => {
      const page = await context.newPage();
      await page.goto(signInUrl);
      await page.locator('input[name=login]').fill('alice');
      await page.locator('input[name=password]').fill('any password');
      const answer = page.waitForResponse(/^http:\/\/127\.0\.0\.1:\d+\/callback\?/, { timeout: 10_000 });
      await page.locator('button[type=submit]').click();
      // The provider asks a person to consent for a native client every time (RFC 8252, 8.6).
      await page.getByRole('button', { name: 'Continue' }).click();
      landed = await (await answer).text();
    });

    expect(result.stderr).toMatch(/Signed in as alice at http:\/\/127\.0\.0\.1:\d+ until \d{4}-/);
    expect(result.code).toBe(0);
    expect(landed).toContain('Signed in: you may close this window');
    const file = join(dir, 'config', 'jit', 'login.json');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'config', 'jit')).mode & 0o777).toBe(0o700);
    const saved = JSON.parse(readFileSync(file, 'utf8'));
    expect(saved).toEqual({ broker: url, issuer: sso.issuer, id_token: expect.stringMatching(/^eyJ/), expires_at: expect.stringMatching(/^\d{4}-.*Z$/) });
    expect(result.stdout + result.stderr).not.toContain(saved.id_token.split('.')[2]);

    // The broker takes it as alice, an approver.
    expect((await t.http.get('/v1/approvals').set(bearer(saved.id_token))).status).toBe(200);

    expect((await jit(['logout'], env())).code).toBe(0);
    expect(existsSync(file)).toBe(false);
  });

  it('signs in at the development sign-in with nothing but the broker\'s URL', async () => {
    const { t, url } = await brokerWith(devConsole);
    const result = await jit(['login', '--broker', url], env(), async (signInUrl) => {
      const params = Object.fromEntries(new URL(signInUrl).searchParams);
      const form = await fetch(`${url}/console/dev-sign-in/authorize`, {
        method: 'POST',
        body: new URLSearchParams({ ...params, username: 'alice', group: 'release-approvers' }),
        redirect: 'manual',
      });
      expect(form.status).toBe(303);
      await fetch(form.headers.get('location') as string); // the browser following the redirect
    });
    expect(result.code).toBe(0);
    const saved = JSON.parse(readFileSync(join(dir, 'config', 'jit', 'login.json'), 'utf8'));
    expect(saved.issuer).toBe('https://dev-sso.invalid');
    expect((await t.http.get('/v1/approvals').set(bearer(saved.id_token))).status).toBe(200);
  });

  it('ignores an answer that does not belong to its sign-in, whatever it says, and signs in with its own', async () => {
    const { url } = await brokerWith(devConsole);
    const forged: { status: number; text: string }[] = [];
    const result = await jit(['login', '--broker', url], env(), async (signInUrl) => {
      const params = Object.fromEntries(new URL(signInUrl).searchParams);
      // Another process on this machine, or a page probing its ports, answers first.
      for (const answer of [
        { code: 'stolen-code', state: 'someone-elses' },
        { error: 'access_denied', error_description: 'Call IT at 555-0100', state: 'someone-elses' },
        { error: 'access_denied', error_description: 'Call IT at 555-0100' },
      ]) {
        const redirect = new URL(params.redirect_uri as string);
        for (const [name, value] of Object.entries(answer)) redirect.searchParams.set(name, value);
        const response = await fetch(redirect);
        forged.push({ status: response.status, text: await response.text() });
      }
      const form = await fetch(`${url}/console/dev-sign-in/authorize`, {
        method: 'POST',
        body: new URLSearchParams({ ...params, username: 'alice', group: 'release-approvers' }),
        redirect: 'manual',
      });
      await fetch(form.headers.get('location') as string);
    });
    expect(forged).toEqual(Array(3).fill({ status: 400, text: 'This answer does not belong to the sign-in waiting here.\n' }));
    expect(result.code).toBe(0);
    expect(result.stderr).not.toContain('Call IT');
    expect(JSON.parse(readFileSync(join(dir, 'config', 'jit', 'login.json'), 'utf8')).issuer).toBe('https://dev-sso.invalid');
  });

  it('shows the SSO\'s refusal when it answers this sign-in, and keeps nothing', async () => {
    const { url } = await brokerWith(devConsole);
    let landed = 0;
    const result = await jit(['login', '--broker', url], env(), async (signInUrl) => {
      const params = new URL(signInUrl).searchParams;
      const redirect = new URL(params.get('redirect_uri') as string);
      redirect.searchParams.set('error', 'access_denied');
      redirect.searchParams.set('error_description', 'alice may not sign in here');
      redirect.searchParams.set('state', params.get('state') as string);
      landed = (await fetch(redirect)).status;
    });
    expect(landed).toBe(400);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/\njit login: the SSO refused: alice may not sign in here\n$/);
    expect(existsSync(join(dir, 'config', 'jit', 'login.json'))).toBe(false);
  });

  it('says so when the broker has no console to name an SSO', async () => {
    const { url } = await brokerWith(() => undefined);
    const result = await jit(['login', '--broker', url], env());
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(`jit login: the broker at ${url} has no console configured, so it names no SSO to sign in at\n`);
  });
});

function devConsole(config: Record<string, unknown>) {
  const issuers = (config.identity as { issuers: Record<string, unknown>[] }).issuers;
  issuers.push({ name: 'dev-sso', kind: 'person', issuer: 'https://dev-sso.invalid', dev: { keyDir: join(dir, 'dev-issuer') }, audiences: ['jit-broker', 'jit-console'], algorithms: ['ES256'], usernameClaim: 'preferred_username' });
  (config.roles as unknown[]).push({ role: 'approver', match: { issuer: 'dev-sso', claims: { groups: 'release-approvers' } } });
  config.console = { issuer: 'dev-sso', clientId: 'jit-console', devSignIn: true };
}
