import { spawn } from 'node:child_process';
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { run } from '../../src/cli/run.js';
import { liveClock, listen, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { jit, jitBundle, type JitOptions } from '../helpers/jit-process.js';
import { tempDir } from '../helpers/temp.js';

/**
 * What a user of vault, tsh or gh expects of a command line: help on every command, a version,
 * durations everywhere, JSON on stdout, exit codes that tell what happened, a broker named once.
 */

let t: TestBroker;
let server: Awaited<ReturnType<typeof listen>>;

beforeAll(async () => {
  t = await startTestBroker({ clock: liveClock() });
  server = await listen(t);
});
afterAll(async () => {
  await server?.close();
  await t?.close();
});

const as = (identity: string, env: NodeJS.ProcessEnv = {}, options: JitOptions = {}): JitOptions => ({
  ...options,
  env: { BROKER_URL: server.url, BROKER_IDENTITY_TOKEN: identity, ...env },
});
const approver = (sub = 'alice') => t.as.person(sub, ['approvers', 'ml-release']);
const lowRisk = (task = 'build-1') => ['request', '--scope', 'artifacts:read', '--audience', 'registry.acme.internal', '--task', task];
const deploy = ['request', '--scope', 'model:deploy', '--audience', 'registry.acme.internal', '--task', 'deploy-9', '--wait', '0', '--json'];
const pendingRequest = async () => {
  const result = await jit(deploy, as(await t.as.ml()));
  expect(result.code).toBe(75);
  return JSON.parse(result.stdout) as { request_id: string; digest: string };
};

/** `jit ARGS` through the CLI's own entry function, in this process, with nothing to call. */
async function runHere(args: string[]) {
  const out = { stdout: '', stderr: '' };
  const code = await run(args, {
    stdout: (text) => void (out.stdout += text),
    stderr: (text) => void (out.stderr += text),
    interactive: false,
    stdoutTerminal: false,
    env: {},
    readStdin: () => '',
    confirm: async () => false,
    fetch: () => Promise.reject(new Error('no network here')),
    sleep: async () => {},
    now: () => Date.now(),
  });
  return { code, ...out };
}

const COMMANDS = ['request', 'collect', 'requests', 'complete', 'revoke', 'approvals', 'show', 'approve', 'deny', 'reviews', 'review', 'audit', 'policy', 'login', 'logout', 'profile', 'backup', 'restore', 'config', 'dev-token', 'decode'];

describe('help and version', () => {
  it('answers --help on every command with its usage on stdout and exit 0', async () => {
    // In this process (a child per command would cost seconds); the process's own stdout and exit
    // code are those of `run`, as the last lines check.
    const results = await Promise.all(COMMANDS.map((command) => runHere([command, '--help'])));
    results.forEach((result, i) => {
      const command = COMMANDS[i] as string;
      expect(result, command).toMatchObject({ code: 0, stderr: '' });
      expect(result.stdout, command).toMatch(new RegExp(`^jit ${command}\\b`));
    });
    // Commands that call the broker say how they find it and the caller, the login last, and the exit codes.
    const request = results[0]?.stdout as string;
    expect(request).toContain('--identity-from SOURCE');
    expect(request).toMatch(/env BROKER_IDENTITY_TOKEN\n\s+your jit login \(<config dir>\/login\.json\), while it has not expired/);
    expect(request).toContain('75  pending approval');
    // -h, `jit help COMMAND`, and --help after other arguments.
    expect(await jit(['approve', 'some-id', '-h'])).toMatchObject({ code: 0, stdout: expect.stringMatching(/^jit approve REQUEST_ID/) });
    expect((await jit(['help', 'requests'])).stdout).toBe((await jit(['requests', '--help'])).stdout);
    expect((await jit(['requests', '--help'])).stdout).toBe(results[COMMANDS.indexOf('requests')]?.stdout);
  });

  it('documents every exit code in jit --help', async () => {
    const help = await jit(['--help']);
    expect(help.code).toBe(0);
    for (const line of ['0   done', '1   failed', '2   usage', '3   refused', '4   identity not accepted', '5   identity expired', '69  broker unreachable', '75  pending approval']) {
      expect(help.stdout).toContain(line);
    }
    const bare = await jit([]);
    expect(bare).toMatchObject({ code: 2, stdout: '' });
    expect(bare.stderr).toContain('Exit codes:');
    const unknown = await jit(['frobnicate']);
    expect(unknown).toMatchObject({ code: 2, stdout: '', stderr: 'jit: unknown command "frobnicate"; jit --help lists them\n' });
    // Names every object has are no commands either (they once found Object's own members).
    for (const name of ['constructor', 'toString', '__proto__']) {
      expect(await jit([name])).toMatchObject({ code: 2, stdout: '', stderr: `jit: unknown command "${name}"; jit --help lists them\n` });
      expect(await jit(['help', name])).toMatchObject({ code: 2, stdout: '' });
    }
  });

  it('prints its version', async () => {
    const { version } = JSON.parse(readFileSync('package.json', 'utf8')) as { version: string };
    expect(await jit(['--version'])).toEqual({ code: 0, stdout: `jit ${version}\n`, stderr: '' });
    expect((await jit(['version'])).stdout).toBe(`jit ${version}\n`);
  });
});

describe('durations and times', () => {
  it('takes --ttl as a duration, a bare number as seconds', async () => {
    const identity = await t.as.ml();
    const lifetime = (token: string) => {
      const { exp, iat } = decodeJwt(token);
      return (exp as number) - (iat as number);
    };
    const fiveMinutes = await jit([...lowRisk(), '--ttl', '5m'], as(identity));
    expect(fiveMinutes.code).toBe(0);
    expect(lifetime(fiveMinutes.stdout.trim())).toBe(300);
    expect(lifetime((await jit([...lowRisk(), '--ttl', '90'], as(identity))).stdout.trim())).toBe(90);
    // Over the scope's maximum (15m): clamped by the broker, not refused.
    expect(lifetime((await jit([...lowRisk(), '--ttl', '1h'], as(identity))).stdout.trim())).toBe(900);

    const bad = ['5x', '1.5s', '0s', '-5m', ''];
    const refusals = await Promise.all(bad.map((ttl) => jit([...lowRisk(), '--ttl', ttl], as(identity))));
    refusals.forEach((refused, i) => {
      expect(refused, bad[i]).toMatchObject({ code: 2, stdout: '' });
      expect(refused.stderr, bad[i]).toMatch(/^jit request: .*--ttl.* \(see jit request --help\)\n$/);
    });
    const wait = await jit([...lowRisk(), '--wait', 'soon'], as(identity));
    expect(wait).toMatchObject({ code: 2, stderr: 'jit request: --wait soon is not a duration such as 30s, 5m or 1h (see jit request --help)\n' });
    expect(await jit([...lowRisk(), '--wait', ''], as(identity))).toMatchObject({ code: 2, stderr: 'jit request: --wait  is not a duration such as 30s, 5m or 1h (see jit request --help)\n' });
    // jit login's --timeout reads durations alike: a bare number is seconds.
    const login = async (timeout: string) => jit(['login', '--no-browser', '--timeout', timeout], { env: { BROKER_URL: server.url } });
    expect(await login('')).toMatchObject({ code: 2, stderr: 'jit login: --timeout  is not a duration such as 30s, 5m or 1h (see jit login --help)\n' });
    expect(await login('0.5s')).toMatchObject({ code: 2, stderr: 'jit login: --timeout 0.5s is shorter than a second (see jit login --help)\n' });
    expect((await login('300')).stderr).toContain('has no console configured');
  });

  it('takes --since and --until as ISO times or durations ago', async () => {
    const ivy = await t.as.person('ivy', ['auditors']);
    await jit(lowRisk('since-1'), as(await t.as.ml()));
    const recent = JSON.parse((await jit(['audit', 'issuances', '--since', '5m', '--json'], as(ivy))).stdout) as { task_id: string }[];
    expect(recent.map((row) => row.task_id)).toContain('since-1');
    const iso = new Date(Date.now() + 3_600_000).toISOString();
    expect(JSON.parse((await jit(['audit', 'issuances', '--since', iso, '--json'], as(ivy))).stdout)).toEqual([]);
    const bad = ['yesterday', '2026-13-45', '15'];
    const refusals = await Promise.all(bad.map((since) => jit(['audit', 'events', '--since', since], as(ivy))));
    expect(refusals.map((result) => result.code)).toEqual([2, 2, 2]);
  });
});

describe('listings and --json', () => {
  it('lists the caller\'s own requests, filtered by status, as a table or as the broker\'s objects', async () => {
    const identity = await t.as.pipeline({}, 'repo:acme/lister:ref:refs/heads/main');
    await jit(lowRisk('listed-1'), as(identity));
    await jit(lowRisk('listed-2'), as(identity));
    const table = await jit(['requests'], as(identity));
    expect(table).toMatchObject({ code: 0, stderr: '' });
    const lines = table.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^CREATED\s+REQUEST\s+STATUS\s+SCOPES\s+AUDIENCE\s+TASK\s+EXPIRES$/);
    expect(lines.slice(1).map((line) => line.split(/\s+/)[5])).toEqual(['listed-2', 'listed-1']);

    const json = JSON.parse((await jit(['requests', '--json', '--status', 'issued'], as(identity))).stdout) as Record<string, unknown>[];
    expect(json).toHaveLength(2);
    expect(json[0]).toMatchObject({ request_id: expect.any(String), status: 'issued', task_id: 'listed-2', requester: { sub: 'repo:acme/lister:ref:refs/heads/main' } });
    expect(JSON.parse((await jit(['requests', '--json', '--status', 'revoked'], as(identity))).stdout)).toEqual([]);

    const paged = await jit(['requests', '--limit', '1'], as(identity));
    expect(paged.stderr).toBe('more rows: add --all\n');
    expect(JSON.parse((await jit(['requests', '--limit', '1', '--all', '--json'], as(identity))).stdout)).toHaveLength(2);
    // Another identity sees none of them.
    const stranger = await jit(['requests', '--json'], as(await t.as.pipeline({}, 'repo:acme/other:ref:refs/heads/main')));
    expect(JSON.parse(stranger.stdout)).toEqual([]);
    const empty = await jit(['requests'], as(await t.as.pipeline({}, 'repo:acme/other:ref:refs/heads/main')));
    expect(empty).toMatchObject({ code: 0, stdout: '', stderr: 'no requests\n' });
  });

  it('lists break-glass grants awaiting review, then reviewed ones', async () => {
    const olga = await t.as.person('olga-reviews', ['on-call']);
    const glass = await jit(['request', '--scope', 'logs:read', '--audience', 'logs', '--task', 'incident-7', '--break-glass', '--justification', 'pager: disk full on logs-3, need to look; and while there, copying the audit log out', '--json'], as(olga));
    const { request_id: id } = JSON.parse(glass.stdout) as { request_id: string };
    const alice = await approver();

    const pending = await jit(['reviews'], as(alice));
    expect(pending.code).toBe(0);
    expect(pending.stdout.split('\n')[0]).toMatch(/^DUE\s+REQUEST\s+REQUESTER\s+SCOPES\s+TASK\s+JUSTIFICATION$/);
    // A cell is cut at 48 characters, and says so: the reviewer is not left to take the start of the justification for all of it.
    expect(pending.stdout).toMatch(new RegExp(`${id}\\s+olga-reviews\\s+logs:read\\s+incident-7\\s+pager: disk full on logs-3, need to look; and w…\\n`));
    const pendingJson = JSON.parse((await jit(['reviews', '--json', '--all'], as(alice))).stdout) as { request_id: string; review: unknown }[];
    expect(pendingJson.find((view) => view.request_id === id)).toMatchObject({ break_glass: true, review: { status: 'pending', overdue: false } });

    await jit(['review', id, '--outcome', 'justified', '--notes', 'disk was full'], as(alice));
    expect(JSON.parse((await jit(['reviews', '--json', '--all'], as(alice))).stdout)).not.toContainEqual(expect.objectContaining({ request_id: id }));
    const done = JSON.parse((await jit(['reviews', '--done', '--json', '--all'], as(alice))).stdout) as { request_id: string }[];
    expect(done).toContainEqual(expect.objectContaining({ request_id: id, review: expect.objectContaining({ outcome: 'justified' }) }));

    const workload = await jit(['reviews'], as(await t.as.ml()));
    expect(workload).toMatchObject({ code: 3, stdout: '' });
  });

  it('prints the broker\'s objects for approvals, approve, deny, show and profile', async () => {
    const pending = await pendingRequest();
    const alice = await approver();
    const approvals = JSON.parse((await jit(['approvals', '--json'], as(alice))).stdout) as { request_id: string }[];
    expect(approvals).toContainEqual(expect.objectContaining({ request_id: pending.request_id, status: 'pending_approval', digest: pending.digest }));
    const approved = await jit(['approve', pending.request_id, '--reason', 'fine', '--yes', '--json'], as(alice));
    expect(approved.code).toBe(0);
    expect(JSON.parse(approved.stdout)).toMatchObject({ request_id: pending.request_id, status: 'approved', approvals: [{ sub: 'alice', decision: 'approve', reason: 'fine' }] });
    const shown = await jit(['show', pending.request_id, '--json'], as(alice));
    expect(JSON.parse(shown.stdout)).toMatchObject({ request_id: pending.request_id, status: 'approved' });

    const other = await pendingRequest();
    const denied = await jit(['deny', other.request_id, '--reason', 'no', '--yes', '--json'], as(alice));
    expect(JSON.parse(denied.stdout)).toMatchObject({ status: 'denied' });

    const profile = await jit(['profile', 'show', '--json'], { env: { BROKER_URL: server.url } });
    expect(JSON.parse(profile.stdout)).toMatchObject({ broker: server.url, source: 'BROKER_URL' });
  });
});

describe('confirmation', () => {
  it('refuses to approve without --yes when stdin is not a terminal, and decides nothing', async () => {
    const pending = await pendingRequest();
    const refused = await jit(['approve', pending.request_id, '--reason', 'looks fine'], as(await approver()));
    expect(refused).toMatchObject({ code: 2, stdout: '' });
    expect(refused.stderr).toContain('stdin is not a terminal: add --yes to decide from a script. Nothing was decided');
    expect((await jit(['deny', pending.request_id, '--reason', 'no'], as(await approver()))).code).toBe(2);
    expect(JSON.parse((await jit(['show', pending.request_id], as(await approver()))).stdout)).toMatchObject({ status: 'pending_approval', approvals: [] });
  });

  it('decides one request at a time: given two, it decides neither, rather than the first alone', async () => {
    const [first, second] = [await pendingRequest(), await pendingRequest()];
    for (const decision of ['approve', 'deny']) {
      const both = await jit([decision, first.request_id, second.request_id, '--reason', 'both reviewed', '--yes'], as(await approver()));
      expect(both, decision).toMatchObject({ code: 2, stdout: '', stderr: `jit ${decision}: unexpected argument "${second.request_id}": it takes only REQUEST_ID; nothing was done (see jit ${decision} --help)\n` });
    }
    for (const { request_id } of [first, second]) {
      expect(JSON.parse((await jit(['show', request_id], as(await approver()))).stdout)).toMatchObject({ status: 'pending_approval', approvals: [] });
    }
  });

  it('asks on a terminal, and decides only on yes', async () => {
    const pending = await pendingRequest();
    const onTerminal = async (answer: string) => {
      const command = [process.execPath, await jitBundle(), 'approve', pending.request_id, '--reason', 'reviewed on a terminal'].map((arg) => `'${arg}'`).join(' ');
      const child = spawn('script', ['-qec', command, '/dev/null'], {
        env: { PATH: process.env.PATH, BROKER_URL: server.url, BROKER_IDENTITY_TOKEN: await approver(), JIT_CONFIG_DIR: tempDir('jit-tty-') },
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      let output = '';
      child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.stdin.end(`${answer}\n`);
      const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
      return { code, output };
    };
    const declined = await onTerminal('n');
    expect(declined.code).toBe(1);
    expect(declined.output).toContain('approve this request? [y/N]');
    expect(declined.output).toContain('nothing was decided');
    expect(JSON.parse((await jit(['show', pending.request_id], as(await approver()))).stdout)).toMatchObject({ status: 'pending_approval' });

    const accepted = await onTerminal('y');
    expect(accepted.code).toBe(0);
    expect(accepted.output).toContain('recorded: approve; the request is now approved');
  });
});

describe('exit codes', () => {
  it('3 for a policy refusal or a separation of duties, with the broker\'s reason', async () => {
    const refused = await jit(['request', '--scope', 'secrets:all', '--audience', 'x', '--task', 'y'], as(await t.as.ml()));
    expect(refused).toEqual({ code: 3, stdout: '', stderr: 'jit request: policy_denied: Scope secrets:all refused: no policy grants them to this identity.\n' });

    // An ML job of its own (separation counts per identity and per person).
    const trainer = await t.as.ml({ sub: 'repo:acme/ml:environment:separation', actor: 'sep-tester' });
    expect((await jit(['request', '--scope', 'model:train', '--audience', 'registry.acme.internal', '--task', 'train-1'], as(trainer))).code).toBe(0);
    const toxic = await jit([...deploy], as(trainer));
    expect(toxic).toMatchObject({ code: 3, stdout: '' });
    expect(toxic.stderr).toMatch(/^jit request: separation_of_duties: .*train-vs-deploy/);
  });

  it('4 for an identity the broker does not accept, 5 for an expired one; neither is echoed', async () => {
    // Signed with another key under the CI issuer's name and key id.
    const forged = await t.issuers.ci.token('repo:acme/app:ref:refs/heads/main', { repository: 'acme/app', actor: 'pat' }, { key: t.issuers.sso.privateKey });
    const rejected = await jit(lowRisk(), as(forged));
    expect(rejected).toMatchObject({ code: 4, stdout: '' });
    expect(rejected.stderr).toBe(
      'jit request: the broker did not accept the identity token from BROKER_IDENTITY_TOKEN (its issuer, audience, signature, age or a required claim; the broker\'s log says which)\n',
    );

    const now = Math.floor(Date.now() / 1000);
    const expired = await t.issuers.ci.token('repo:acme/app:ref:refs/heads/main', { repository: 'acme/app', actor: 'pat', iat: now - 900, exp: now - 300 });
    const stale = await jit(lowRisk(), as(expired));
    expect(stale).toMatchObject({ code: 5, stdout: '' });
    expect(stale.stderr).toBe(
      `jit request: the identity token from BROKER_IDENTITY_TOKEN expired at ${new Date((now - 300) * 1000).toISOString()}; get a fresh one and run again\n`,
    );
    expect(rejected.stderr).not.toContain(forged);
    expect(stale.stderr).not.toContain(expired);
    // The broker answers both with the same generic 401: the CLI told them apart by exp alone.
    const answers = await Promise.all(
      [forged, expired].map(async (token) => {
        const response = await fetch(`${server.url}/v1/credentials`, { headers: { authorization: `Bearer ${token}` } });
        return { status: response.status, body: await response.json() };
      }),
    );
    expect(answers[0]).toEqual(answers[1]);
    expect(answers[0]).toMatchObject({ status: 401, body: { detail: 'The identity token was not accepted.' } });
  });

  it('69 when the broker cannot be reached', async () => {
    const port = await closedPort();
    const down = await jit(['requests'], { env: { BROKER_URL: `http://127.0.0.1:${port}`, BROKER_IDENTITY_TOKEN: await t.as.ml() } });
    expect(down).toEqual({ code: 69, stdout: '', stderr: `jit requests: cannot reach the broker at http://127.0.0.1:${port} (ECONNREFUSED)\n` });
  });

  it('1 for what the broker cannot find, 2 for usage', async () => {
    const missing = await jit(['show', '0190f3f0-0000-7000-8000-000000000000'], as(await t.as.ml()));
    expect(missing).toMatchObject({ code: 1, stdout: '' });
    expect(missing.stderr).toMatch(/^jit show: not_found: /);
    expect((await jit(['request', '--audience', 'x', '--task', 'y'], as(await t.as.ml()))).code).toBe(2);
    const bogus = await jit(['request', '--bogus'], as(await t.as.ml()));
    expect(bogus).toMatchObject({ code: 2, stderr: expect.stringContaining("Unknown option '--bogus'") });
  });

  it('2 for an argument a command does not take, named, and nothing done: never the first alone', async () => {
    const identity = await t.as.ml();
    const { request_id: id } = await pendingRequest();
    const token = (await jit(lowRisk('stray-0'), as(identity))).stdout.trim();
    const runs: [string[], string][] = [
      // `jit show A B` showed A: the reader took it for B as well.
      [['show', id, 'stray'], 'it takes only REQUEST_ID|TOKEN|-'],
      [[...lowRisk('stray-1'), 'stray'], 'it takes no arguments'],
      [['collect', id, 'stray', '--wait', '0'], 'it takes only REQUEST_ID'],
      [['complete', id, 'stray'], 'it takes only REQUEST_ID|TOKEN|-'],
      [['requests', 'stray'], 'it takes no arguments'],
      [['audit', 'events', 'stray'], 'it takes no arguments'],
      [['profile', 'show', 'stray'], 'it takes no arguments'],
      [['decode', token, 'stray'], 'it takes only TOKEN|-'],
    ];
    for (const [args, takes] of runs) {
      const result = await jit(args, as(identity));
      const name = args[0] as string;
      expect(result, args.join(' ')).toEqual({ code: 2, stdout: '', stderr: `jit ${name}: unexpected argument "stray": ${takes}; nothing was done (see jit ${name} --help)\n` });
    }
    expect(await jit(['help', 'show', 'stray'])).toEqual({ code: 2, stdout: '', stderr: 'jit help: unexpected argument "stray": it takes only COMMAND; nothing was done\n' });
    // A token given twice is named without being shown.
    const twice = await jit(['complete', token, token], as(identity));
    expect(twice).toMatchObject({ code: 2, stdout: '' });
    expect(twice.stderr).toContain('unexpected argument "<not shown: it looks like a token>"');
    expect(twice.stderr).not.toContain(token.split('.')[1]);

    // Nothing was asked for, completed or collected.
    const mine = JSON.parse((await jit(['requests', '--json'], as(identity))).stdout) as { task_id: string; request_id: string; status: string }[];
    expect(mine.map((view) => view.task_id)).not.toContain('stray-1');
    expect(mine.find((view) => view.request_id === id)?.status).toBe('pending_approval');
    expect(mine.find((view) => view.task_id === 'stray-0')?.status).toBe('issued');
  });
});

describe('finding the broker', () => {
  it('is an error, not a silent default, when nothing names the broker, even with the server\'s configuration at hand', async () => {
    const dir = tempDir('jit-noconf-');
    writeFileSync(join(dir, 'broker.yaml'), YAML.stringify({ ...t.config, issuer: server.url }));
    const none = await jit(lowRisk(), { env: { BROKER_IDENTITY_TOKEN: await t.as.ml(), BROKER_CONFIG: join(dir, 'broker.yaml') } });
    expect(none).toEqual({
      code: 2,
      stdout: '',
      stderr:
        'jit request: no broker: pass --broker URL, set BROKER_URL, or run: jit profile set --broker URL (the development broker of npm start is http://127.0.0.1:8080) (see jit request --help)\n',
    });
  });

  it('takes --broker over BROKER_URL over the profile', async () => {
    const configDir = tempDir('jit-profile-');
    const identity = await t.as.ml();
    const base = { JIT_CONFIG_DIR: configDir, BROKER_IDENTITY_TOKEN: identity };
    chmodSync(configDir, 0o755); // there already, open to others: made private before the profile goes in
    const set = await jit(['profile', 'set', '--broker', `${server.url}/`], { env: base });
    expect(set).toEqual({ code: 0, stdout: '', stderr: `the broker is ${server.url} (kept in ${join(configDir, 'profile.json')})\n` });
    expect(JSON.parse(readFileSync(join(configDir, 'profile.json'), 'utf8'))).toEqual({ broker: server.url });
    expect(statSync(join(configDir, 'profile.json')).mode & 0o777).toBe(0o600);
    expect(statSync(configDir).mode & 0o777).toBe(0o700);

    expect((await jit(lowRisk(), { env: base })).code).toBe(0);
    expect((await jit(['profile'], { env: base })).stdout).toBe(`broker  ${server.url}  (from ${join(configDir, 'profile.json')})\n`);

    const down = `http://127.0.0.1:${await closedPort()}`;
    expect((await jit(lowRisk(), { env: { ...base, BROKER_URL: down } })).code).toBe(69);
    expect((await jit([...lowRisk(), '--broker', server.url], { env: { ...base, BROKER_URL: down } })).code).toBe(0);
    expect(JSON.parse((await jit(['profile', 'show', '--json', '--broker', server.url], { env: { ...base, BROKER_URL: down } })).stdout)).toMatchObject({ source: '--broker' });

    // XDG_CONFIG_HOME/jit when JIT_CONFIG_DIR is not set.
    const xdg = tempDir('jit-xdg-');
    await jit(['profile', 'set', '--broker', server.url], { env: { JIT_CONFIG_DIR: '', XDG_CONFIG_HOME: xdg } });
    expect(JSON.parse(readFileSync(join(xdg, 'jit', 'profile.json'), 'utf8'))).toEqual({ broker: server.url });

    expect((await jit(['profile', 'unset'], { env: base })).code).toBe(0);
    expect((await jit(lowRisk(), { env: base })).code).toBe(2);
  });

  it('refuses a broker URL that would send identity tokens in clear text to another machine', async () => {
    const identity = await t.as.ml();
    const remote = await jit(lowRisk(), { env: { BROKER_URL: 'http://broker.example.com', BROKER_IDENTITY_TOKEN: identity } });
    expect(remote).toMatchObject({ code: 2, stdout: '' });
    expect(remote.stderr).toContain('plain http to another machine');
    expect((await jit(['profile', 'set', '--broker', 'http://broker.example.com'])).code).toBe(2);
    expect((await jit(['profile', 'set', '--broker', 'https://user:pw@broker.example.com'])).code).toBe(2);
    // Only JIT_ALLOW_HTTP=1 opts in: 0, or any other value, is no.
    for (const value of ['0', 'yes', '']) {
      expect((await jit(lowRisk(), { env: { BROKER_URL: 'http://broker.example.com', BROKER_IDENTITY_TOKEN: identity, JIT_ALLOW_HTTP: value } })).code, value).toBe(2);
    }
    // Opted in (a mesh sidecar protects the path): the CLI tries, and here finds nothing.
    const optedIn = await jit(lowRisk(), { env: { BROKER_URL: 'http://broker.invalid', BROKER_IDENTITY_TOKEN: identity, JIT_ALLOW_HTTP: '1' } });
    expect(optedIn.code).toBe(69);
  });
});

/** A loopback port with nothing listening. */
async function closedPort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as { port: number };
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}
