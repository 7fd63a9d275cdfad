import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { liveClock, listen, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { createTestIssuer, type TestIssuer } from '../helpers/issuer.js';
import { jit, type JitResult } from '../helpers/jit-process.js';
import { startFakeActions, type FakeActions } from '../integrations/fake-actions.js';
import { tempDir } from '../helpers/temp.js';

/**
 * `--identity-from`: the CLI takes the identity a CI system or platform already gives the job,
 * in the order `jit --help` lists, and never shows the token it read or fetched.
 */

let t: TestBroker;
let server: Awaited<ReturnType<typeof listen>>;
let actions: FakeActions;
let gitlab: TestIssuer;
let kubernetes: TestIssuer;
let spire: TestIssuer;
let dir: string;

const request = (task: string) => ['request', '--scope', 'artifacts:read', '--audience', 'registry.acme.internal', '--task', task];

beforeAll(async () => {
  actions = await startFakeActions();
  gitlab = await createTestIssuer('https://gitlab.example.com');
  kubernetes = await createTestIssuer('https://kubernetes.default.svc.cluster.local');
  spire = await createTestIssuer('unused');
  t = await startTestBroker({
    clock: liveClock(),
    configure(config) {
      const workload = { kind: 'workload', audiences: ['jit-broker'], algorithms: ['ES256'] };
      (config.identity as { issuers: unknown[] }).issuers.push(
        actions.issuerConfig(),
        { ...workload, name: 'gitlab', issuer: gitlab.iss, jwks: gitlab.jwks, initiatorClaim: 'user_login', bindClaims: ['pipeline_id'] },
        { ...workload, name: 'k8s', issuer: kubernetes.iss, jwks: kubernetes.jwks, bindClaims: [['kubernetes.io', 'pod', 'uid']] },
        { ...workload, name: 'spire', spiffeTrustDomain: 'example.org', jwks: { keys: [{ ...spire.publicJwk, use: 'jwt-svid' }] } },
      );
      (config.policies as unknown[]).push(
        { id: 'gh', match: { issuer: 'github', subject: 'repo:acme/*' }, scopes: ['artifacts:read'] },
        { id: 'gl', match: { issuer: 'gitlab', subject: 'project_path:acme/*' }, scopes: ['artifacts:read'] },
        { id: 'k8s', match: { issuer: 'k8s', claims: { 'kubernetes.io': { namespace: 'prod' } } }, scopes: ['artifacts:read'] },
        { id: 'svid', match: { issuer: 'spire', subject: 'spiffe://example.org/ns/prod/*' }, scopes: ['artifacts:read'] },
      );
    },
  });
  server = await listen(t);
  dir = tempDir('jit-identity-');
});
afterAll(async () => {
  await server?.close();
  await t?.close();
  await actions?.close();
});

const gitlabToken = (pipeline = '4711') =>
  gitlab.token('project_path:acme/app:ref_type:branch:ref:main', { project_path: 'acme/app', pipeline_id: pipeline, user_login: 'gl-dev' });
const podToken = (uid = 'pod-uid-1') =>
  kubernetes.token('system:serviceaccount:prod:deployer', { 'kubernetes.io': { namespace: 'prod', pod: { name: 'deployer-1', uid }, serviceaccount: { name: 'deployer' } } });
const svid = (sub = 'spiffe://example.org/ns/prod/sa/deployer') => spire.token(sub, { iss: undefined });
const file = (name: string, content: string) => {
  const path = join(dir, name);
  writeFileSync(path, `${content}\n`);
  return path;
};
const env = (extra: NodeJS.ProcessEnv = {}) => ({ env: { BROKER_URL: server.url, ...extra } });

/** The credential came out, and what the broker recorded says who asked. */
async function expectIssued(result: JitResult, requester: string) {
  expect(result).toMatchObject({ code: 0, stderr: '' });
  const claims = decodeJwt(result.stdout.trim());
  expect(claims.sub).toBe(requester);
  return claims;
}

describe('--identity-from github-actions', () => {
  it('asks the Actions endpoint for a token with the broker\'s audience, and never shows it', async () => {
    const asked = actions.audiences.length;
    const result = await jit([...request('gh-1'), '--identity-from', 'github-actions'], env(actions.env));
    await expectIssued(result, 'repo:acme/app:ref:refs/heads/main');
    expect(actions.audiences.slice(asked)).toEqual(['jit-broker']);
    const fetched = actions.tokens.at(-1) as string;
    expect(result.stdout + result.stderr).not.toContain(fetched);
  });

  it('asks with another audience when told, which this broker refuses: exit 4, the token not shown', async () => {
    const result = await jit([...request('gh-2'), '--identity-from', 'github-actions:https://github.com/acme'], env(actions.env));
    expect(actions.audiences.at(-1)).toBe('https://github.com/acme');
    expect(result).toMatchObject({ code: 4, stdout: '' });
    expect(result.stderr).toContain('the broker did not accept the identity token from GitHub Actions');
    expect(result.stderr).not.toContain(actions.tokens.at(-1) as string);
  });

  it('says what the workflow lacks outside a job with id-token: write, and when the endpoint refuses', async () => {
    const outside = await jit([...request('gh-3'), '--identity-from', 'github-actions'], env());
    expect(outside).toMatchObject({ code: 2, stdout: '' });
    expect(outside.stderr).toContain('ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set; run in a GitHub Actions job with permissions: id-token: write');
    const wrongBearer = await jit([...request('gh-4'), '--identity-from', 'github-actions'], env({ ...actions.env, ACTIONS_ID_TOKEN_REQUEST_TOKEN: 'not-the-one' }));
    expect(wrongBearer).toEqual({ code: 1, stdout: '', stderr: 'jit request: the GitHub Actions token endpoint answered HTTP 401\n' });
  });

  it('lists only this job\'s requests: another run of the same workflow sees none of them', async () => {
    actions.claims.run_id = '7001';
    await jit([...request('gh-run-7001'), '--identity-from', 'github-actions'], env(actions.env));
    const mine = JSON.parse((await jit(['requests', '--json', '--identity-from', 'github-actions'], env(actions.env))).stdout) as { task_id: string; bound_claims: unknown }[];
    expect(mine.map((view) => view.task_id)).toEqual(['gh-run-7001']);
    expect(mine[0]?.bound_claims).toEqual({ run_id: '7001', run_attempt: '1' });
    actions.claims.run_id = '7002';
    const next = await jit(['requests', '--json', '--identity-from', 'github-actions'], env(actions.env));
    expect(JSON.parse(next.stdout)).toEqual([]);
  });
});

describe('--identity-from gitlab, kubernetes, spiffe, file, env', () => {
  it('reads a GitLab id_tokens variable, JIT_ID_TOKEN unless named', async () => {
    const token = await gitlabToken();
    await expectIssued(await jit([...request('gl-1'), '--identity-from', 'gitlab'], env({ JIT_ID_TOKEN: token })), 'project_path:acme/app:ref_type:branch:ref:main');
    await expectIssued(await jit([...request('gl-2'), '--identity-from', 'gitlab:BROKER_ID'], env({ BROKER_ID: token })), 'project_path:acme/app:ref_type:branch:ref:main');
    const missing = await jit([...request('gl-3'), '--identity-from', 'gitlab'], env());
    expect(missing).toMatchObject({ code: 2, stdout: '' });
    expect(missing.stderr).toContain('JIT_ID_TOKEN is not set; declare it in .gitlab-ci.yml under id_tokens: (JIT_ID_TOKEN: {aud: jit-broker})');
  });

  it('reads a projected Kubernetes service-account token, at the default path unless named', async () => {
    const path = file('k8s-token', await podToken());
    await expectIssued(await jit([...request('k8s-1'), '--identity-from', `kubernetes:${path}`], env()), 'system:serviceaccount:prod:deployer');
    const absent = await jit([...request('k8s-2'), '--identity-from', 'kubernetes'], env());
    expect(absent).toEqual({
      code: 2,
      stdout: '',
      stderr:
        'jit request: cannot read the file /var/run/secrets/tokens/jit-broker (Kubernetes service-account token) (ENOENT): mount a projected service-account token there, or name its file: --identity-from kubernetes:PATH (see jit request --help)\n',
    });
  });

  it('reads a JWT-SVID file named by spiffe:PATH or JIT_SPIFFE_SVID_FILE, and refuses a token that is not one', async () => {
    const path = file('svid.jwt', await svid());
    await expectIssued(await jit([...request('svid-1'), '--identity-from', `spiffe:${path}`], env()), 'spiffe://example.org/ns/prod/sa/deployer');
    await expectIssued(await jit([...request('svid-2'), '--identity-from', 'spiffe'], env({ JIT_SPIFFE_SVID_FILE: path })), 'spiffe://example.org/ns/prod/sa/deployer');
    const notSvid = file('not-svid.jwt', await podToken());
    const refused = await jit([...request('svid-3'), '--identity-from', `spiffe:${notSvid}`], env());
    expect(refused).toMatchObject({ code: 2, stdout: '' });
    expect(refused.stderr).toContain(`the identity token from the file ${notSvid} (JWT-SVID) is not a JWT-SVID: its sub is not a SPIFFE ID`);
    expect((await jit([...request('svid-4'), '--identity-from', 'spiffe'], env())).code).toBe(2);
  });

  it('reads file:PATH, env:VAR, --identity-file and stdin; refuses what is not a JWT without showing it', async () => {
    const token = await t.as.pipeline();
    const sub = 'repo:acme/app:ref:refs/heads/main';
    await expectIssued(await jit([...request('f-1'), '--identity-from', `file:${file('id.jwt', token)}`], env()), sub);
    await expectIssued(await jit([...request('f-2'), '--identity-from', 'env:MY_IDENTITY'], env({ MY_IDENTITY: token })), sub);
    await expectIssued(await jit([...request('f-3'), '--identity-file', file('id2.jwt', token)], env()), sub);
    await expectIssued(await jit([...request('f-4'), '--identity-file', '-'], { ...env(), stdin: token }), sub);
    await expectIssued(await jit([...request('f-5'), '--identity-from', 'file:-'], { ...env(), stdin: token }), sub);

    const secret = 'hunter2-not-a-jwt';
    const junk = await jit([...request('f-6'), '--identity-from', `file:${file('junk', secret)}`], env());
    expect(junk).toMatchObject({ code: 2, stdout: '' });
    expect(junk.stderr).toContain('is not a JWT');
    expect(junk.stderr).not.toContain(secret);
    expect((await jit([...request('f-7'), '--identity-from', 'vault'], env())).stderr).toContain('--identity-from vault: unknown source');
    expect((await jit([...request('f-8'), '--identity-from', 'env:UNSET_VAR'], env())).code).toBe(2);
  });
});

describe('a token given where a path or a name belongs', () => {
  it('is not echoed in the message that refuses it, however it was given; an ordinary path still is', async () => {
    const token = await t.as.pipeline();
    const long = 'x'.repeat(300);
    const given: [string[], NodeJS.ProcessEnv][] = [
      [['--identity-file', token], {}],
      [['--identity-from', `file:${token}`], {}],
      [['--identity-from', `kubernetes:${token}`], {}],
      [['--identity-from', `spiffe:${token}`], {}],
      [['--identity-from', `env:${token}`], {}],
      [['--identity-from', `gitlab:${token}`], {}],
      [['--identity-from', token], {}],
      [['--actor-token', token], { BROKER_IDENTITY_TOKEN: token }],
      [['--identity-file', long], {}],
      [['--broker', token], { BROKER_IDENTITY_TOKEN: token }],
      [['--object', token], { BROKER_IDENTITY_TOKEN: token }],
    ];
    const results = await Promise.all(given.map(([args, extra], i) => jit([...request(`echo-${i}`), ...args], env(extra))));
    results.forEach((result, i) => {
      const what = given[i]?.[0].join(' ').slice(0, 40);
      expect(result.stdout, what).toBe('');
      expect(result.stderr, what).toMatch(/<not shown: (it looks like a token|300 characters, as long as a token)>/);
      expect(result.stderr, what).not.toContain(token.split('.')[1]);
      expect(result.stderr, what).not.toContain(long);
    });
    // No such file (or a name too long for one): the reason, and what was given, in words.
    expect(results[0]?.stderr).toMatch(/^jit request: cannot read the file <not shown: it looks like a token> \(E[A-Z]+\) \(see jit request --help\)\n$/);
    expect(results[7]?.stderr).toMatch(/^jit request: cannot read the actor token from <not shown: it looks like a token> \(E[A-Z]+\)\n$/);

    // In place of the command, or in BROKER_URL (the two variables swapped in a pipeline's settings).
    for (const [args, extra] of [[[token, 'request'], {}], [['help', token], {}], [['requests'], { BROKER_URL: token, BROKER_IDENTITY_TOKEN: token }]] as const) {
      const result = await jit([...args], { env: extra });
      expect(result.code, args[0]).toBe(2);
      expect(result.stderr, args[0]).toContain('<not shown: it looks like a token>');
      expect(result.stderr, args[0]).not.toContain(token.split('.')[1]);
    }

    const missing = join(dir, 'no-such.jwt');
    expect((await jit([...request('echo-path'), '--actor-token', missing], env({ BROKER_IDENTITY_TOKEN: token }))).stderr).toBe(
      `jit request: cannot read the actor token from ${missing} (ENOENT)\n`,
    );
  });
});

describe('which identity wins', () => {
  const login = (configDir: string, content: Record<string, unknown>) => {
    mkdirSync(configDir, { recursive: true });
    writeFileSync(join(configDir, 'login.json'), JSON.stringify(content), { mode: 0o600 });
  };

  it('--identity-from, then --identity-file, then BROKER_IDENTITY_TOKEN, then the jit login', async () => {
    const good = await t.as.pipeline();
    const person = await t.as.person('lena', ['on-call']);
    const forged = await t.issuers.ci.token('repo:acme/app:ref:refs/heads/main', { repository: 'acme/app', actor: 'pat' }, { key: t.issuers.sso.privateKey });
    const configDir = join(dir, 'config-precedence');
    login(configDir, { broker: server.url, issuer: 'https://sso.test', id_token: forged, expires_at: new Date(Date.now() + 3_600_000).toISOString() });
    const base = { BROKER_URL: server.url, JIT_CONFIG_DIR: configDir };

    const fromFlag = await jit([...request('p-1'), '--identity-from', 'env:GOOD'], { env: { ...base, GOOD: good, BROKER_IDENTITY_TOKEN: forged } });
    expect(fromFlag.code).toBe(0);
    const fromFile = await jit([...request('p-2'), '--identity-file', file('p.jwt', good)], { env: { ...base, BROKER_IDENTITY_TOKEN: forged } });
    expect(fromFile.code).toBe(0);
    const fromEnv = await jit([...request('p-3')], { env: { ...base, BROKER_IDENTITY_TOKEN: good } });
    expect(fromEnv.code).toBe(0);
    // Only the login is left: it is used (here a forged one, so the broker refuses it).
    const fromLogin = await jit([...request('p-4')], { env: base });
    expect(fromLogin).toMatchObject({ code: 4, stdout: '' });
    expect(fromLogin.stderr).toContain(`the identity token from your login (${join(configDir, 'login.json')})`);
    expect(fromLogin.stderr).not.toContain(forged);

    // A valid login of a person, with its broker used when nothing else names one.
    login(configDir, { broker: server.url, issuer: 'https://sso.test', id_token: person, expires_at: new Date(Date.now() + 3_600_000).toISOString() });
    const personal = await jit(['request', '--scope', 'logs:read', '--audience', 'logs', '--task', 'p-5'], { env: { JIT_CONFIG_DIR: configDir } });
    expect(personal.code).toBe(0);
    expect(decodeJwt(personal.stdout).sub).toBe('lena');

    const both = await jit([...request('p-6'), '--identity-from', 'env:GOOD', '--identity-file', '-'], { env: { ...base, GOOD: good } });
    expect(both).toMatchObject({ code: 2, stderr: expect.stringContaining('give --identity-from or --identity-file, not both') });
  });

  it('treats an expired login as an expired identity, and never sends a login to another broker', async () => {
    const configDir = join(dir, 'config-expired');
    const person = await t.as.person('lena', ['on-call']);
    login(configDir, { broker: server.url, issuer: 'https://sso.test', id_token: person, expires_at: '2020-01-01T00:00:00Z' });
    const expired = await jit(['requests'], { env: { JIT_CONFIG_DIR: configDir } });
    expect(expired).toEqual({ code: 5, stdout: '', stderr: `jit requests: your login (${join(configDir, 'login.json')}) expired at 2020-01-01T00:00:00.000Z; run: jit login\n` });

    login(configDir, { broker: 'https://other-broker.example.com', issuer: 'https://sso.test', id_token: person, expires_at: new Date(Date.now() + 3_600_000).toISOString() });
    const elsewhere = await jit(['requests'], { env: { JIT_CONFIG_DIR: configDir, BROKER_URL: server.url } });
    expect(elsewhere).toMatchObject({ code: 2, stdout: '' });
    expect(elsewhere.stderr).toContain(`is for https://other-broker.example.com, not ${server.url} (from BROKER_URL)`);

    writeFileSync(join(configDir, 'login.json'), 'not json');
    expect((await jit(['requests'], { env: { JIT_CONFIG_DIR: configDir, BROKER_URL: server.url } })).stderr).toContain('is not a jit login file; run: jit login');
  });

  it('says "expired", exit 5, when the identity expires while waiting for approval, and how to carry on', async () => {
    const identityFile = join(dir, 'rotating.jwt');
    writeFileSync(identityFile, await t.as.ml());
    let swapped = false;
    const now = Math.floor(Date.now() / 1000);
    const expiredToken = await t.as.ml({ iat: now - 900, exp: now - 60 });
    const result = await jit(
      ['request', '--scope', 'model:deploy', '--audience', 'registry.acme.internal', '--task', 'deploy-exp', '--wait', '30s', '--identity-from', `file:${identityFile}`],
      {
        env: { BROKER_URL: server.url, JIT_POLL_INTERVAL: '100ms' },
        // The file is read again on every call: once the request waits, its token has expired.
        onStderr(stderr) {
          if (!swapped && stderr.includes('waiting for approval')) {
            swapped = true;
            writeFileSync(identityFile, expiredToken);
          }
        },
      },
    );
    const id = /request (\S+) needs/.exec(result.stderr)?.[1] as string;
    expect(result).toMatchObject({ code: 5, stdout: '' });
    expect(result.stderr).toContain(
      `jit request: the identity token from the file ${identityFile} expired at ${new Date((now - 60) * 1000).toISOString()}; get a fresh one and run again; the request stays as it is: jit collect ${id} with a fresh identity\n`,
    );
  });
});
