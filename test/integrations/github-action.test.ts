import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { decodeJwt } from 'jose';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, liveClock, listen, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { startFakeActions, type FakeActions } from './fake-actions.js';
import { tempDir } from '../helpers/temp.js';

/**
 * integrations/github-action as the runner runs it: its main script, then its post step, as
 * node processes with the inputs, files and OIDC endpoint a job has; against the real broker.
 */

const ACTION = resolve(import.meta.dirname, '../../integrations/github-action');
const action = YAML.parse(readFileSync(join(ACTION, 'action.yml'), 'utf8')) as {
  inputs: Record<string, { required?: boolean; default?: string }>;
  outputs: Record<string, unknown>;
  runs: { using: string; main: string; post: string };
};

/** The `with:` of the README's workflow: what a reader copies is what is tested. */
function readmeInputs(): Record<string, string> {
  const readme = readFileSync(resolve(import.meta.dirname, '../../README.md'), 'utf8');
  const block = [...readme.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1] as string).find((text) => text.includes('integrations/github-action@'));
  const workflow = YAML.parse(block as string) as { jobs: Record<string, { permissions: Record<string, string>; steps: { uses?: string; with?: Record<string, string> }[] }> };
  const job = Object.values(workflow.jobs)[0];
  expect(job?.permissions['id-token']).toBe('write');
  return job?.steps.find((step) => step.uses?.includes('integrations/github-action@'))?.with as Record<string, string>;
}

let t: TestBroker;
let server: Awaited<ReturnType<typeof listen>>;
let actions: FakeActions;

beforeAll(async () => {
  actions = await startFakeActions();
  t = await startTestBroker({
    clock: liveClock(),
    configure(config) {
      (config.identity as { issuers: unknown[] }).issuers.push(actions.issuerConfig());
      (config.policies as unknown[]).push({ id: 'gh', match: { issuer: 'github', subject: 'repo:acme/app:ref:refs/heads/main' }, scopes: ['artifacts:read', 'model:deploy'] });
    },
  });
  server = await listen(t);
});
afterAll(async () => {
  await server?.close();
  await t?.close();
  await actions?.close();
});

interface Step {
  code: number | null;
  log: string;
  outputs: Record<string, string>;
  env: Record<string, string>;
  state: Record<string, string>;
}

/** Reads a runner file command file: `name<<DELIMITER`, value lines, the delimiter. */
function fileCommands(path: string): Record<string, string> {
  const lines = readFileSync(path, 'utf8').split('\n');
  const values: Record<string, string> = {};
  for (let i = 0; i < lines.length; i += 1) {
    const header = /^([^<]+)<<(.+)$/.exec(lines[i] as string);
    if (!header) continue;
    const end = lines.indexOf(header[2] as string, i + 1);
    values[header[1] as string] = lines.slice(i + 1, end).join('\n');
    i = end;
  }
  return values;
}

/** Runs one step of the action the way the runner does: INPUT_* with the defaults of action.yml, the file commands, STATE_* for post. */
async function runStep(
  which: 'main' | 'post',
  inputs: Record<string, string>,
  options: { env?: Record<string, string>; state?: Record<string, string>; onLog?: (log: string) => void } = {},
): Promise<Step> {
  const dir = tempDir('jit-action-');
  const files = { GITHUB_OUTPUT: join(dir, 'output'), GITHUB_ENV: join(dir, 'env'), GITHUB_STATE: join(dir, 'state') };
  for (const file of Object.values(files)) writeFileSync(file, '');
  const env: Record<string, string> = {
    PATH: process.env.PATH as string,
    GITHUB_ACTIONS: 'true',
    GITHUB_REPOSITORY: 'acme/app',
    GITHUB_RUN_ID: String(actions.claims.run_id),
    GITHUB_RUN_ATTEMPT: '1',
    GITHUB_JOB: 'publish',
    ...actions.env,
    ...files,
    ...options.env,
  };
  for (const [name, spec] of Object.entries(action.inputs)) {
    const value = inputs[name] ?? spec.default;
    if (value !== undefined) env[`INPUT_${name.toUpperCase()}`] = value;
  }
  for (const [name, value] of Object.entries(options.state ?? {})) env[`STATE_${name}`] = value;
  const child = spawn(process.execPath, [join(ACTION, action.runs[which])], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const append = (chunk: Buffer) => {
    log += chunk.toString();
    options.onLog?.(log);
  };
  child.stdout.on('data', append);
  child.stderr.on('data', append);
  const code = await new Promise<number | null>((done) => child.on('close', done));
  return { code, log, outputs: fileCommands(files.GITHUB_OUTPUT), env: fileCommands(files.GITHUB_ENV), state: fileCommands(files.GITHUB_STATE) };
}

/** Every secret appears in the log only in the runner's mask command, which comes first. */
function expectMasked(log: string, secrets: string[]) {
  for (const secret of secrets) {
    const lines = log.split('\n').filter((line) => line.includes(secret));
    expect(lines).toEqual([`::add-mask::${secret}`]);
  }
}

const admin = () => t.as.person('root', ['admins']);
const withBroker = (inputs: Record<string, string>) => ({ ...inputs, 'broker-url': server.url });

describe('the GitHub Action', () => {
  it('declares a node action with a post step, and the inputs and outputs the README uses', () => {
    expect(action.runs).toEqual({ using: 'node24', main: 'main.mjs', post: 'post.mjs' });
    expect(Object.keys(action.outputs).sort()).toEqual(['expires-at', 'request-id', 'token']);
    for (const name of Object.keys(readmeInputs())) expect(action.inputs, name).toHaveProperty(name);
  });

  it('exchanges the job\'s OIDC token for a credential, masks it, exports it, and completes the grant in its post step', async () => {
    actions.claims.run_id = '9120331';
    const fetched = actions.tokens.length;
    const main = await runStep('main', withBroker(readmeInputs()));
    expect(main.code).toBe(0);
    const token = main.outputs.token as string;
    expect(decodeJwt(token)).toMatchObject({
      sub: 'repo:acme/app:ref:refs/heads/main',
      scope: 'artifacts:read',
      aud: 'registry.acme.internal',
      task_id: 'acme/app/actions/runs/9120331/attempts/1#publish',
    });
    expect(main.outputs).toMatchObject({ 'request-id': decodeJwt(token).request_id, 'expires-at': new Date((decodeJwt(token).exp as number) * 1000).toISOString() });
    expect(main.env).toEqual({ JIT_TOKEN: token });
    expect(main.state).toEqual({ request_id: decodeJwt(token).request_id });
    expect(actions.audiences.slice(-1)).toEqual(['jit-broker']);
    expectMasked(main.log, [token, ...actions.tokens.slice(fetched)]);
    expect(main.log).toContain(`credential issued for artifacts:read on registry.acme.internal: request ${main.state.request_id}`);

    const fetchedByPost = actions.tokens.length;
    const post = await runStep('post', withBroker(readmeInputs()), { state: main.state });
    expect(post.code).toBe(0);
    expect(post.log).toContain(`request ${main.state.request_id} completed: the grant is revoked`);
    expect(actions.tokens.length).toBe(fetchedByPost + 1);
    expectMasked(post.log, actions.tokens.slice(fetchedByPost));
    const view = await t.http.get(`/v1/credentials/${main.state.request_id}`).set(bearer(await admin()));
    expect(view.body).toMatchObject({ status: 'revoked', revoke_reason: 'task_completed', bound_claims: { run_id: '9120331', run_attempt: '1' } });
  });

  it('waits for an approval, then gives the credential with its approver', async () => {
    actions.claims.run_id = '9120400';
    let announced: (id: string) => void;
    const pending = new Promise<string>((resolve) => (announced = resolve));
    const running = runStep('main', withBroker({ scopes: 'model:deploy', audience: 'registry.acme.internal', wait: '30s' }), {
      env: { JIT_POLL_INTERVAL: '100ms' },
      // Approve only once the action has polled and said it waits, so that line is always there.
      onLog: (log) => {
        const found = /waiting for approval of (\S+): 0\/1/.exec(log);
        if (found) announced(found[1] as string);
      },
    });
    const id = await pending;
    const approver = await t.as.person('alice', ['approvers', 'ml-release']);
    const { digest } = (await t.http.get(`/v1/credentials/${id}`).set(bearer(approver))).body as { digest: string };
    expect((await t.http.post(`/v1/credentials/${id}/approvals`).set(bearer(approver)).send({ decision: 'approve', reason: 'ok', digest })).status).toBe(200);

    const main = await running;
    expect(main.code).toBe(0);
    expect(main.log).toContain(`request ${id} needs 1 approval(s)`);
    expect(decodeJwt(main.outputs.token as string)).toMatchObject({ request_id: id, approvers: [expect.objectContaining({ sub: 'alice' })] });
    expect((await runStep('post', withBroker({}), { state: main.state })).code).toBe(0);
  });

  it('fails the step with the broker\'s reason, and its post step has nothing to end', async () => {
    const refused = await runStep('main', withBroker({ scopes: 'db:admin', audience: 'db' }));
    expect(refused.code).toBe(1);
    expect(refused.log).toContain('::error::policy_denied: Scope db:admin refused');
    expect(refused.outputs).toEqual({});
    expect(refused.state).toEqual({});
    const post = await runStep('post', withBroker({}), { state: refused.state });
    expect(post).toMatchObject({ code: 0, log: '' });
  });

  it('fails with what the workflow lacks when the job may not ask for an OIDC token', async () => {
    const step = await runStep('main', withBroker(readmeInputs()), { env: { ACTIONS_ID_TOKEN_REQUEST_URL: '', ACTIONS_ID_TOKEN_REQUEST_TOKEN: '' } });
    expect(step).toMatchObject({ code: 1, log: '::error::no OIDC token for this job: give the workflow or job `permissions: id-token: write`\n' });
    const plain = await runStep('main', { ...readmeInputs(), 'broker-url': 'http://jit-broker.acme.internal' });
    expect(plain.log).toContain('::error::input broker-url must be https');
  });

  it('leaves a pending request ended when the wait runs out, and only warns when the grant already ended', async () => {
    actions.claims.run_id = '9120500';
    const timedOut = await runStep('main', withBroker({ scopes: 'model:deploy', audience: 'registry.acme.internal', wait: '0' }));
    expect(timedOut.code).toBe(1);
    expect(timedOut.log).toMatch(/::error::request \S+ is still pending approval/);
    const id = timedOut.state.request_id as string;
    expect((await runStep('post', withBroker({}), { state: timedOut.state })).log).toContain(`request ${id} completed: the grant is revoked`);

    const again = await runStep('post', withBroker({}), { state: timedOut.state });
    expect(again.code).toBe(0);
    expect(again.log).toContain(`::warning::could not complete request ${id}: conflict: The request is already revoked.`);
  });
});
