import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseConfig, createTestIssuers, type TestIssuers } from '../helpers/broker.js';
import { startBrokerProcess, until, type BrokerProcess } from '../helpers/process.js';

/**
 * `listen.workers`: several broker processes behind one port, each a whole broker with its own
 * connection to the database; the primary keeps them running and answers for all of them.
 */

let dir: string;
let issuers: TestIssuers;
let broker: BrokerProcess & { url: string };

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'jit-cluster-'));
  issuers = await createTestIssuers();
  const base = baseConfig(dir, issuers) as Record<string, Record<string, unknown>>;
  broker = await startBrokerProcess(dir, 'broker', { ...base, listen: { ...base.listen, workers: 2 } });
}, 60_000);

afterAll(async () => {
  if (broker?.child.exitCode === null) broker.child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

/** The primary's children that are brokers (tsx also runs an esbuild service under it). */
const workers = () =>
  execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(broker.child.pid)], { encoding: 'utf8' })
    .split('\n')
    .filter((line) => line.includes('main.ts'))
    .map((line) => Number(line.trim().split(/\s+/)[0]));
const issue = async () => {
  const identity = await issuers.ci.token('repo:acme/app:ref:refs/heads/main', { repository: 'acme/app', actor: 'pat' });
  return fetch(`${broker.url}/v1/credentials`, {
    method: 'POST',
    headers: { authorization: `Bearer ${identity}`, 'content-type': 'application/json' },
    body: JSON.stringify({ task_id: 'build', scopes: ['artifacts:read'], audience: 'registry.acme.internal' }),
  });
};
const issuedCount = async () => {
  const text = await (await fetch(`${broker.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('broker_http_requests_total{') && l.includes('route="/v1/credentials"') && l.includes('status="201"'));
  return Number(line?.split(' ').at(-1) ?? 0);
};

describe('a broker of several worker processes', () => {
  it('runs the workers it is told to, and serves through them', async () => {
    await until(() => workers().length === 2);
    const responses = await Promise.all(Array.from({ length: 40 }, issue));
    expect(responses.map((r) => r.status)).toEqual(Array(40).fill(201));
  });

  it('answers a scrape for all the workers, whichever one takes it', async () => {
    const before = await issuedCount();
    await Promise.all(Array.from({ length: 30 }, issue));
    // Every scrape lands on one worker or the other; each must count both workers' requests.
    for (let i = 0; i < 4; i += 1) expect(await issuedCount()).toBe(before + 30);
  });

  it('replaces a worker that dies, and keeps serving', async () => {
    const [victim] = workers();
    process.kill(victim as number, 'SIGKILL');
    await until(() => workers().length === 2 && !workers().includes(victim as number));
    await until(async () => (await issue()).status === 201);
    expect(broker.lines().some((line) => line.msg === 'a worker died; starting another')).toBe(true);
  });

  it('stops every worker, cleanly, on SIGTERM', async () => {
    const pids = workers();
    broker.child.kill('SIGTERM');
    expect(await broker.exited).toBe(0);
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
  });
});
