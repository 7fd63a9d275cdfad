import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { liveClock, listen, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { runCli } from '../helpers/cli.js';

/**
 * The CLI against a broker on a real port, with development issuers as in the shipped config:
 * the CLI mints identities with `dev-token` from the same configuration file.
 */

let t: TestBroker;
let server: Awaited<ReturnType<typeof listen>>;
let configFile: string;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  t = await startTestBroker({
    clock: liveClock(),
    configure(config) {
      const dir = String(config.database).replace(/broker\.db$/, '');
      for (const issuer of (config.identity as { issuers: Record<string, unknown>[] }).issuers) {
        delete issuer.jwks;
        issuer.dev = { keyDir: join(dir, 'dev-issuer') };
      }
      configFile = join(dir, 'broker.yaml');
      writeFileSync(configFile, YAML.stringify(config));
    },
  });
  server = await listen(t);
  env = { BROKER_URL: server.url, BROKER_CONFIG: configFile };
});
afterAll(async () => {
  await server.close();
  await t.close();
});

const devToken = async (...args: string[]) => {
  const result = await runCli(['dev-token', ...args], env);
  expect(result.code).toBe(0);
  return result.stdout.trim();
};
const workload = () => devToken('--sub', 'repo:acme/ml:ref:refs/heads/main', '--claim', 'ref=refs/heads/main', '--claim', 'repository=acme/ml', '--claim', 'actor=bob');
const person = (sub: string, groups: string[]) => devToken('--issuer', 'sso', '--sub', sub, '--claim', `groups=${JSON.stringify(groups)}`, '--claim', `preferred_username=${sub}`);
const as = (token: string) => ({ ...env, BROKER_IDENTITY_TOKEN: token });
const deployArgs = ['request', '--scope', 'model:deploy', '--audience', 'registry.acme.internal', '--task', 'deploy-7'];

async function pendingId(approver: string): Promise<string> {
  for (let i = 0; i < 100; i += 1) {
    const listed = await runCli(['approvals', '--json'], as(approver));
    const items = JSON.parse(listed.stdout || '[]') as { request_id: string }[];
    if (items[0]) return items[0].request_id;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error('no pending request appeared');
}

describe('jit dev-token and request', () => {
  it('print a development identity token, then the credential alone on stdout', async () => {
    const identity = await workload();
    expect(decodeJwt(identity)).toMatchObject({ iss: 'https://ci.test', sub: 'repo:acme/ml:ref:refs/heads/main', aud: 'jit-broker', ref: 'refs/heads/main' });
    const result = await runCli(['request', '--scope', 'artifacts:read', '--audience', 'registry.acme.internal', '--task', 'build-1'], as(identity));
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(result.stdout).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+\n$/);
    expect(decodeJwt(result.stdout)).toMatchObject({ scope: 'artifacts:read', task_id: 'build-1' });
  });

  it('reads the identity from a file or stdin', async () => {
    const file = join(t.dir, 'identity.jwt');
    writeFileSync(file, `${await workload()}\n`);
    const args = ['request', '--scope', 'artifacts:read', '--audience', 'registry.acme.internal', '--task', 'b'];
    expect((await runCli([...args, '--identity-file', file], env)).code).toBe(0);
    expect((await runCli([...args, '--identity-file', '-'], env, { stdin: await workload() })).code).toBe(0);
  });

  it('waits for approval with progress on stderr, then prints the token', async () => {
    const requesting = runCli([...deployArgs, '--wait', '30s'], as(await workload()));
    const approver = await person('alice', ['approvers', 'ml-release']);
    const id = await pendingId(approver);
    const decided = await runCli(['approve', id, '--reason', 'release 7 reviewed', '--yes'], as(approver));
    expect(decided.code).toBe(0);
    expect(decided.stderr).toContain(`request       ${id} (pending_approval)`);
    expect(decided.stderr).toMatch(/digest        [0-9a-f]{64}/);
    expect(decided.stderr).toContain('recorded: approve; the request is now approved');

    const result = await requesting;
    expect(result.code).toBe(0);
    expect(result.stderr).toContain(`request ${id} needs 1 approval(s); digest`);
    expect(result.stderr).toContain(`waiting for approval of ${id}`);
    expect(decodeJwt(result.stdout)).toMatchObject({ request_id: id, approvers: [expect.objectContaining({ sub: 'alice' })] });
  });

  it('ends with exit 1 when the request is denied', async () => {
    const requesting = runCli([...deployArgs, '--wait', '30s'], as(await workload()));
    const approver = await person('carol', ['approvers', 'ml-release']);
    const id = await pendingId(approver);
    expect((await runCli(['deny', id, '--reason', 'not today', '--yes'], as(approver))).code).toBe(0);
    const result = await requesting;
    expect(result).toMatchObject({ code: 1, stdout: '' });
    expect(result.stderr).toContain(`request ${id} is denied; no token`);
  });

  it('stops waiting with exit 75 and a way to collect later', async () => {
    const identity = await workload();
    const result = await runCli([...deployArgs, '--wait', '0'], as(identity));
    expect(result.code).toBe(75);
    const id = /jit collect (\S+)/.exec(result.stderr)?.[1] as string;
    const approver = await person('alice', ['approvers', 'ml-release']);
    // A decision bound to a digest the approver did not review is refused before anything is sent.
    const stale = await runCli(['approve', id, '--reason', 'ok', '--digest', 'f'.repeat(64), '--yes'], as(approver));
    expect(stale.code).toBe(1);
    expect(stale.stderr).toContain('no longer matches the digest');
    // On a terminal, answering no decides nothing.
    const declined = await runCli(['approve', id, '--reason', 'ok'], as(approver), { interactive: true, answer: false });
    expect(declined).toMatchObject({ code: 1 });
    expect((await runCli(['show', id], as(identity))).stdout).toContain('"status": "pending_approval"');

    await runCli(['approve', id, '--reason', 'ok', '--yes'], as(approver));
    const collected = await runCli(['collect', id], as(identity));
    expect(collected.code).toBe(0);
    expect(decodeJwt(collected.stdout).request_id).toBe(id);
  });

  it('runs break-glass, review, complete and revoke', async () => {
    const olga = await person('olga', ['on-call']);
    const glass = await runCli(['request', '--scope', 'model:deploy', '--audience', 'registry.acme.internal', '--task', 'incident-1', '--break-glass', '--justification', 'registry down, rolling back model 41', '--json'], as(olga));
    expect(glass.code).toBe(0);
    const { request_id: id, access_token } = JSON.parse(glass.stdout) as { request_id: string; access_token: string };
    expect(decodeJwt(access_token).break_glass).toBe(true);
    const own = await runCli(['review', id, '--outcome', 'justified', '--notes', 'me'], as(olga));
    expect(own).toMatchObject({ code: 1 });
    expect(own.stderr).toContain('separation_of_duties');
    expect((await runCli(['review', id, '--outcome', 'justified', '--notes', 'incident 1 confirmed'], as(await person('alice', ['approvers', 'ml-release'])))).code).toBe(0);
    expect((await runCli(['complete', id], as(olga))).stderr).toBe(`request ${id} is now revoked\n`);

    const identity = await workload();
    const plain = await runCli(['request', '--scope', 'artifacts:read', '--audience', 'registry.acme.internal', '--task', 'x', '--json'], as(identity));
    const plainId = (JSON.parse(plain.stdout) as { request_id: string }).request_id;
    expect((await runCli(['revoke', plainId, '--reason', 'leaked'], as(identity))).code).toBe(0);
  });

  it('reports refusals and usage errors with distinct exit codes, in one line', async () => {
    const refused = await runCli(['request', '--scope', 'secrets:all', '--audience', 'x', '--task', 'y'], as(await workload()));
    expect(refused).toMatchObject({ code: 1, stdout: '' });
    expect(refused.stderr).toBe('jit request: policy_denied: Scope secrets:all refused: no policy grants them to this identity.\n');
    expect((await runCli(['request', '--audience', 'x', '--task', 'y'], as(await workload()))).code).toBe(2);
    expect((await runCli(['request', '--scope', 'a', '--audience', 'x', '--task', 'y'], env)).stderr).toContain('no identity token');
    expect((await runCli(['request', '--bogus'], env)).code).toBe(2);
    expect((await runCli(['frobnicate'], env)).code).toBe(2);
    const down = await runCli(['approvals', '--broker', 'http://127.0.0.1:9'], as(await workload()));
    expect(down).toMatchObject({ code: 1 });
    expect(down.stderr).toContain('cannot reach the broker at http://127.0.0.1:9');
  });
});

describe('what the CLI prints from the broker', () => {
  it('shows control characters in a request as escapes, so it cannot redraw the approver\'s terminal', async () => {
    const sub = 'repo:acme/ml:ref:refs/heads/main\u001b[1A\u001b[2Kjustification checked by security';
    const hostile = await devToken('--sub', sub, '--claim', 'ref=refs/heads/main', '--claim', 'repository=acme/ml');
    const response = await fetch(`${server.url}/v1/credentials`, {
      method: 'POST',
      headers: { authorization: `Bearer ${hostile}`, 'content-type': 'application/json' },
      body: JSON.stringify({ task_id: 'spoof-1', scopes: ['model:deploy'], audience: 'registry.acme.internal' }),
    });
    expect(response.status).toBe(202);

    const listed = await runCli(['approvals'], as(await person('mallory-watcher', ['approvers', 'ml-release'])));
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain('requester     repo:acme/ml:ref:refs/heads/main\\u{1b}[1A\\u{1b}[2Kjustification checked by security');
    expect(listed.stdout).not.toMatch(/\u001b/);
  });
});

describe('jit audit', () => {
  it('prints issuances as a table, CSV or NDJSON, events, and verifies the chain', async () => {
    const auditor = as(await person('ivy', ['auditors']));
    const tableOut = await runCli(['audit', 'issuances', '--all'], auditor);
    expect(tableOut.code).toBe(0);
    expect(tableOut.stdout.split('\n')[0]).toMatch(/^ISSUED\s+STATUS\s+SUBJECT\s+SCOPES\s+AUDIENCE\s+TASK\s+APPROVERS$/);
    expect(tableOut.stdout).toMatch(/repo:acme\/ml:ref:refs\/heads\/main\s+model:deploy\s+registry\.acme\.internal\s+deploy-7\s+alice/);
    const csv = await runCli(['audit', 'issuances', '--format', 'csv', '--break-glass', 'true'], auditor);
    expect(csv.stdout.split('\r\n')[0]).toMatch(/^jti,request_id,/);
    expect(csv.stdout).toContain('registry down, rolling back model 41');
    const ndjson = await runCli(['audit', 'events', '--format', 'ndjson', '--type', 'breakglass.reviewed'], auditor);
    expect(ndjson.stdout.trim().split('\n').map((line) => JSON.parse(line).type)).toEqual(['breakglass.reviewed']);
    expect((await runCli(['audit', 'verify'], auditor)).stdout).toMatch(/^ok: \d+ events/);
    const refused = await runCli(['audit', 'issuances'], as(await workload()));
    expect(refused.code).toBe(1);
  });

  it('decodes a token for reading', async () => {
    const result = await runCli(['decode', '-'], env, { stdin: await workload() });
    expect(JSON.parse(result.stdout)).toMatchObject({ header: { alg: 'ES256', typ: 'JWT' }, claims: { iss: 'https://ci.test' } });
  });
});

describe('the jit binary', () => {
  it('prints only the token on stdout, so a pipeline can capture it', async () => {
    const file = join(t.dir, 'ci-identity.jwt');
    writeFileSync(file, await workload());
    // Asynchronously: this process serves the broker the child talks to.
    const result = await promisify(execFile)(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', 'request', '--identity-file', file, '--scope', 'artifacts:read', '--audience', 'registry.acme.internal', '--task', 'build-9'],
      { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 15_000 },
    );
    expect(result.stderr).toBe('');
    expect(result.stdout).toMatch(/^eyJ[\w-]+\.[\w-]+\.[\w-]+\n$/);
  });
});
