import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { brokerBundle, jitBundle } from '../helpers/bundle.js';
import { tempDir } from '../helpers/temp.js';

/**
 * The README's walks, run as a newcomer runs them after `npm ci && npm start`: the shipped
 * configuration, the broker as its own process in a fresh checkout's folder, and the shell
 * blocks of "Your first token" pasted into bash as written (only the port differs: the broker
 * listens on a free one rather than 8080).
 */

const ROOT = resolve(import.meta.dirname, '../..');
const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
const blocks = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1] as string);
const block = (marker: string) => {
  const found = blocks.find((text) => text.includes(marker));
  if (!found) throw new Error(`no README sh block holds ${marker}`);
  return found;
};

let checkout: string;
let broker: ReturnType<typeof spawn>;
let url: string;

beforeAll(async () => {
  // A checkout as `npm ci` leaves it: config/, node_modules/, and the CLI built into dist/.
  checkout = tempDir('jit-readme-');
  mkdirSync(join(checkout, 'config'));
  for (const file of ['broker.yaml', 'broker.cases.yaml']) copyFileSync(join(ROOT, 'config', file), join(checkout, 'config', file));
  symlinkSync(join(ROOT, 'node_modules'), join(checkout, 'node_modules'));
  mkdirSync(join(checkout, 'dist/cli'), { recursive: true });
  copyFileSync(await jitBundle(), join(checkout, 'dist/cli/main.js'));
  writeFileSync(join(checkout, 'package.json'), JSON.stringify({ name: 'jit-broker', version: '0.0.0-readme', type: 'module' }));

  broker = spawn(process.execPath, [await brokerBundle()], {
    cwd: checkout,
    env: { PATH: process.env.PATH, PORT: '0', LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  url = await new Promise<string>((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`the broker did not start:\n${log}`)), 25_000);
    broker.stdout?.on('data', (chunk: Buffer) => {
      log += chunk.toString();
      const line = log.split('\n').find((candidate) => candidate.includes('broker listening'));
      if (line) {
        clearTimeout(timer);
        resolveUrl((JSON.parse(line) as { url: string }).url);
      }
    });
    broker.stderr?.on('data', (chunk: Buffer) => (log += chunk.toString()));
  });
});
afterAll(async () => {
  if (broker && broker.exitCode === null) {
    const exited = new Promise((done) => broker.once('exit', done));
    broker.kill('SIGTERM');
    await exited;
  }
});

/** Runs README blocks in one bash, at the checkout's root, aliases expanded as in a terminal. */
async function paste(...texts: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const script = ['shopt -s expand_aliases', ...texts].join('\n').replaceAll('http://127.0.0.1:8080', url);
  // Each line as a terminal runs it: an alias defined on one line is used on the next.
  const child = spawn('bash', ['-e', '-o', 'pipefail'], { cwd: checkout, env: { PATH: process.env.PATH, HOME: checkout }, stdio: ['pipe', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '' };
  child.stdout.on('data', (chunk: Buffer) => (out.stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (out.stderr += chunk.toString()));
  child.stdin.end(`${script}\n`);
  const code = await new Promise<number | null>((done) => child.on('close', done));
  return { code, ...out };
}

describe('the README, run as written', { timeout: 60_000 }, () => {
  it('"Your first token": a development identity, a credential, a look inside, the grant ended; the same through curl', async () => {
    const setup = block('alias jit=');
    expect(setup).toContain('export BROKER_URL=http://127.0.0.1:8080');
    const walk = await paste(setup, block('# 1. An identity'), 'echo "---"', block('oauth2/token'));
    expect(walk.code).toBe(0);
    expect(walk.stderr).toMatch(/^request \S+ is now revoked\n$/);
    const [cli, curl] = walk.stdout.split('---\n') as [string, string];
    expect(cli).toContain('"scope": "artifacts:read"');
    expect(cli).toContain('"task_id": "build-42"');
    expect(cli).toMatch(/CREATED\s+REQUEST\s+STATUS.*\n.*\s+revoked\s+artifacts:read\s+registry\.acme\.internal\s+build-42\s/);
    expect(JSON.parse(curl)).toMatchObject({ token_type: 'Bearer', scope: 'artifacts:read', issued_token_type: 'urn:ietf:params:oauth:token-type:access_token' });
  });

  it('break-glass with its review, then the auditor\'s view', async () => {
    const walk = await paste(block('alias jit='), block('--break-glass'), block('jit audit issuances --all'));
    expect(walk.code).toBe(0);
    expect(walk.stderr).toContain('review recorded: justified');
    expect(walk.stdout).toMatch(/DUE\s+REQUEST\s+REQUESTER\s+SCOPES\s+TASK\s+JUSTIFICATION/);
    expect(walk.stdout).toMatch(/olga\s+model:deploy\s+incident-99/);
    // verify through the broker, then with the checkpoint just signed, through the broker and offline on the file
    expect(walk.stdout).toMatch(
      /ok: \d+ events, head [0-9a-f]{64}\n(ok: \d+ events, head [0-9a-f]{64}, holding the checkpoint's head \(seq \d+\)\n){2}$/,
    );
    expect(readFileSync(join(checkout, 'deploys.csv'), 'utf8')).toContain('incident-99');
  });

  it('"One model, three steps": the trainer may not deploy what it trained; registry and release each by someone else; the chain of custody', async () => {
    const walk = await paste(block('alias jit='), block('jit audit duties'));
    expect(walk.code, walk.stderr).toBe(0);
    expect(walk.stdout).toContain('refused, exit 3\n');
    expect(walk.stderr).toMatch(/separation_of_duties: Duty "model-release": .* step "train" for "fraud-v1"/);
    const custody = walk.stdout.slice(walk.stdout.indexOf('CREATED'));
    expect(custody.split('\n')[0]).toMatch(/^CREATED\s+STEP\s+STATUS\s+REQUESTER\s+INITIATOR\s+APPROVALS\s+REQUEST$/);
    expect(custody).toMatch(/train\s+revoked\s+repo:acme\/ml:ref:refs\/heads\/main\s+bob\s+-/);
    expect(custody).toMatch(/register\s+issued\s+repo:acme\/model-registry:ref:refs\/heads\/main\s+carol\s+alice:approve/);
    expect(custody).toMatch(/deploy\s+issued\s+repo:acme\/ml-release:ref:refs\/heads\/main\s+dave\s+erin:approve/);
  });

  it('"An agent acting for a person": a delegated token, a helper agent\'s child token, the lot revoked at once', async () => {
    const walk = await paste(block('alias jit='), block('--actor-token agent.jwt'));
    expect(walk.code, walk.stderr).toBe(0);
    expect(walk.stdout).toContain('"sub": "agent:release-assistant"');
    expect(walk.stdout).toMatch(/"sub": "agent:helper-logs",\s+"act": \{\s+"iss": "https:\/\/dev-agents.invalid",\s+"sub": "agent:release-assistant"/);
    expect(walk.stderr).toMatch(/is now revoked/);
    const requests = walk.stdout.slice(walk.stdout.indexOf('CREATED'));
    expect(requests).toMatch(/revoked\s+artifacts:read logs:read\s+registry\.acme\.internal\s+triage-17/);
    expect(requests).toMatch(/revoked\s+logs:read\s+registry\.acme\.internal\s+triage-17/);
  });

  it('without BROKER_URL, stops and says where the development broker is', async () => {
    const alias = (block('alias jit=').split('\n')[0] as string);
    const walk = await paste(alias, 'BROKER_IDENTITY_TOKEN=a.b.c jit requests || echo "exit $?"');
    expect(walk.stdout).toBe('exit 2\n');
    expect(walk.stderr).toContain('no broker');
  });
});
