import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { workerExecArgv } from '../../src/process/primary.js';
import { baseConfig, createTestIssuers, type TestIssuers } from '../helpers/broker.js';
import { startBrokerProcess, until, workerPids, type BrokerProcess } from '../helpers/process.js';

/**
 * `listen.workers`: several broker processes behind one port, each a whole broker with its own
 * connection to the database; the primary keeps them running and answers for all of them.
 */

let dir: string;
let issuers: TestIssuers;
let broker: BrokerProcess & { url: string };
let config: Record<string, any>;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'jit-cluster-'));
  issuers = await createTestIssuers();
  const base = baseConfig(dir, issuers) as Record<string, any>;
  config = { ...base, listen: { ...base.listen, workers: 2 } };
  broker = await startBrokerProcess(dir, 'broker', config);
}, 60_000);

afterAll(async () => {
  if (broker?.child.exitCode === null) broker.child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

const workers = () => workerPids(broker);
const issue = async (scopes = ['artifacts:read']) => {
  const identity = await issuers.ci.token('repo:acme/app:ref:refs/heads/main', { repository: 'acme/app', actor: 'pat' });
  return fetch(`${broker.url}/v1/credentials`, {
    method: 'POST',
    headers: { authorization: `Bearer ${identity}`, 'content-type': 'application/json' },
    body: JSON.stringify({ task_id: 'build', scopes, audience: 'registry.acme.internal' }),
  });
};
const logged = (msg: string) => broker.lines().filter((line) => line.msg === msg);
const reloadEvents = async () => {
  const auditor = await issuers.sso.token('ivy', { groups: ['auditors'], preferred_username: 'ivy' });
  const page = (await (await fetch(`${broker.url}/v1/audit/events?type=config.loaded`, { headers: { authorization: `Bearer ${auditor}` } })).json()) as {
    items: { data: { trigger: string } }[];
  };
  return page.items.filter((event) => event.data.trigger === 'reload').length;
};
/** Waits until a request is served again after a worker died; a pooled connection it held fails on the socket, as for any client. */
const servedAgain = () =>
  until(async () => {
    try {
      return (await issue()).status === 201;
    } catch (error) {
      if (['UND_ERR_SOCKET', 'ECONNRESET'].includes((error as { cause?: { code?: string } }).cause?.code ?? '')) return false;
      throw error;
    }
  });
/** Kills one worker and resolves once its replacement listens (its `worker listening` line); with the primary's exit code if the broker stops instead. */
const replaceAWorker = async () => {
  const [victim] = workers();
  const listening = logged('worker listening').length;
  process.kill(victim as number, 'SIGKILL');
  await until(() => (logged('worker listening').length > listening && workers().length === 2 && !workers().includes(victim as number)) || broker.child.exitCode !== null);
  return { exitCode: broker.child.exitCode, replacement: logged('worker listening').at(-1) as Record<string, unknown> };
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

  it('collects each worker\'s garbage on its own thread when the workers are as many as the cores', () => {
    const commandLines = workers().map((pid) => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0'));
    expect(commandLines).toHaveLength(2);
    for (const args of commandLines) expect(args.includes('--single-threaded-gc')).toBe(2 >= availableParallelism());
  });

  it('answers a scrape for all the workers, whichever one takes it', async () => {
    const before = await issuedCount();
    await Promise.all(Array.from({ length: 30 }, issue));
    // Every scrape lands on one worker or the other; each must count both workers' requests.
    for (let i = 0; i < 4; i += 1) expect(await issuedCount()).toBe(before + 30);
  });

  // The reload test after this one sends SIGHUP while the replacement may still be starting.
  it('replaces a worker that dies, and keeps serving', async () => {
    expect((await replaceAWorker()).exitCode).toBeNull();
    await servedAgain();
    expect(broker.lines().some((line) => line.msg === 'a worker died; starting another')).toBe(true);
  });

  it('reloads every worker on SIGHUP to the primary, records it once, and says so once all have', async () => {
    const before = logged('configuration reloaded').length;
    expect((await Promise.all(Array.from({ length: 20 }, () => issue(['logs:read'])))).map((r) => r.status)).toContain(201);
    writeFileSync(join(dir, 'broker.yaml'), YAML.stringify({ ...config, policies: config.policies.map((p: { id: string; scopes: string[] }) => (p.id === 'pipelines' ? { ...p, scopes: ['artifacts:read'] } : p)) }));
    broker.child.kill('SIGHUP');
    await until(() => logged('configuration reloaded').length > before);
    expect(logged('configuration reloaded').at(-1)).toMatchObject({ workers: 2, changed: ['policies'] });
    expect(logged('configuration reloaded').filter((line) => line.worker !== undefined)).toEqual([]);
    // From that line on, whichever worker takes a request judges it by the new file.
    expect((await Promise.all(Array.from({ length: 20 }, () => issue(['logs:read'])))).map((r) => r.status)).toEqual(Array(20).fill(403));
    expect(await reloadEvents()).toBe(1);

    // A signal to a worker alone (or to the whole process group) does not reload it on its own.
    for (const pid of workers()) process.kill(pid, 'SIGHUP');
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(workers()).toHaveLength(2);
    expect(await reloadEvents()).toBe(1);
  });

  // CONTRACT section 7: a refused file changes nothing, a worker started after it included.
  it('starts a replacement worker with the configuration the others run, not a file a reload refused', async () => {
    const reloaded = readFileSync(join(dir, 'broker.yaml'), 'utf8'); // the last reload the workers applied
    const refuse = async (file: Record<string, unknown>) => {
      const before = logged('invalid configuration; the running configuration stays').length;
      writeFileSync(join(dir, 'broker.yaml'), YAML.stringify(file));
      broker.child.kill('SIGHUP');
      await until(() => logged('invalid configuration; the running configuration stays').length > before);
    };

    // A typo: the replacement would fail on it (exit 78), and the primary stop the whole broker.
    await refuse({ ...config, scopes: [{ name: 'Bad Scope', risk: 'low', maxTtl: '15m' }] });
    expect((await replaceAWorker()).exitCode).toBeNull();
    await servedAgain();

    // A restart-only change: the replacement would serve as another issuer beside the other worker.
    await refuse({ ...config, issuer: 'http://other-broker.test' });
    const { exitCode, replacement } = await replaceAWorker();
    expect(exitCode).toBeNull();
    expect(replacement.issuer).toBe(config.issuer);
    await servedAgain();
    // And it judges by the reloaded policies, as the other worker does: logs:read is no longer granted.
    expect((await Promise.all(Array.from({ length: 20 }, () => issue(['logs:read'])))).map((r) => r.status)).toEqual(Array(20).fill(403));
    writeFileSync(join(dir, 'broker.yaml'), reloaded);
  });

  it('stops every worker, cleanly, on SIGTERM', async () => {
    const pids = workers();
    broker.child.kill('SIGTERM');
    expect(await broker.exited).toBe(0);
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
  });
});

describe('the workers\' node arguments', () => {
  it('are the primary\'s, with one garbage-collector thread each only when the workers fill the cores', () => {
    const primary = ['--max-semi-space-size=8', '--heap-growing-percent=100'];
    expect(workerExecArgv(primary, 2, 2)).toEqual([...primary, '--single-threaded-gc']);
    expect(workerExecArgv(primary, 3, 2)).toEqual([...primary, '--single-threaded-gc']);
    expect(workerExecArgv(primary, 2, 8)).toEqual(primary);
    expect(workerExecArgv([...primary, '--single-threaded-gc'], 2, 2)).toEqual([...primary, '--single-threaded-gc']);
  });
});

describe('a stop a worker does not finish cleanly', () => {
  it('is the broker\'s exit code too: 1, not the primary\'s own 0', async () => {
    const own = await startBrokerProcess(dir, 'unclean', { ...config, database: join(dir, 'unclean.db') });
    try {
      const [stuck] = workerPids(own);
      // Stopped, it cannot answer the SIGTERM the primary sends; killed, it never closes its store.
      process.kill(stuck as number, 'SIGSTOP');
      own.child.kill('SIGTERM');
      await until(() => own.lines().some((line) => line.msg === 'stopping: workers finish their in-flight requests'));
      process.kill(stuck as number, 'SIGKILL');
      expect(await own.exited).toBe(1);
      expect(own.lines().some((line) => line.msg === 'a worker did not stop cleanly')).toBe(true);
    } finally {
      if (own.child.exitCode === null) own.child.kill('SIGKILL');
    }
  });
});
