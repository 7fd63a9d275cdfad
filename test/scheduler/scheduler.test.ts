import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { verifyChain } from '../../src/audit/index.js';
import { createLogger, createMetrics } from '../../src/observability/index.js';
import { createScheduler } from '../../src/scheduler/index.js';
import { baseConfig, bearer, liveClock, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { startBrokerProcess } from '../helpers/process.js';
import { allEvents } from '../helpers/records.js';

const body = { task_id: 'build-1', scopes: ['artifacts:read'], audience: 'registry.acme.internal' };

let t: TestBroker | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

const until = async (check: () => boolean | Promise<boolean>, ms = 10_000) => {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
};
const status = async (t: TestBroker, id: string) => (await t.db.sql<{ status: string }>('SELECT status FROM requests WHERE id = ?', [id]))[0]?.status;
const expiredEvents = async (t: TestBroker, id: string) => (await allEvents(t)).filter((e) => e.type === 'grant.expired' && e.requestId === id);

describe('the scheduler', () => {
  it('marks a grant expired on its own ticks, with exactly one event', async () => {
    t = await startTestBroker({ clock: liveClock() });
    await t.broker.scheduler.start();
    const grant = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ ...body, ttl_seconds: 2 });
    expect(grant.body.expires_in).toBe(2);
    await until(async () => (await status(t!, grant.body.request_id)) === 'expired');
    await new Promise((resolve) => setTimeout(resolve, 1_500)); // another tick or so
    expect(await expiredEvents(t, grant.body.request_id)).toHaveLength(1);
    expect((await expiredEvents(t, grant.body.request_id))[0]?.data).toMatchObject({ scopes: ['artifacts:read'], jti: expect.any(String) });
  });

  it('catches up at start on grants that expired while the broker was down', async () => {
    t = await startTestBroker();
    const grant = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ ...body, ttl_seconds: 60 });
    await t.broker.close();
    t.clock.advance(5 * 60_000);
    await t.restart();
    await t.broker.scheduler.start(); // its first run is immediate
    expect(await status(t, grant.body.request_id)).toBe('expired');
    expect(await expiredEvents(t, grant.body.request_id)).toHaveLength(1);
  });

  it('serves while it catches up at start, and catches up all the same', async () => {
    t = await startTestBroker();
    const grant = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ ...body, ttl_seconds: 1 });
    await t.broker.close();
    // Past its end in real time, the clock of the broker process below.
    await new Promise((resolve) => setTimeout(resolve, Date.parse(grant.body.expires_at) - Date.now() + 50));
    const config = baseConfig(t.dir, t.issuers, t.db.url) as { listen: object };
    const broker = await startBrokerProcess(t.dir, 'catching-up', { ...config, listen: { ...config.listen, workers: 1 } });
    const caughtUp = (line: Record<string, unknown>) => line.msg === 'scheduler job changed records' && line.job === 'expire-grants';
    try {
      await until(() => broker.lines().some(caughtUp));
    } finally {
      broker.child.kill('SIGTERM');
      expect(await broker.exited).toBe(0);
    }
    // It listened first: a backlog of days is swept while requests are served, never before.
    const lines = broker.lines();
    expect(lines.findIndex((line) => line.msg === 'broker listening')).toBeLessThan(lines.findIndex(caughtUp));
    await t.restart();
    expect(await status(t, grant.body.request_id)).toBe('expired');
    expect(await expiredEvents(t, grant.body.request_id)).toHaveLength(1);
  });

  it('records one event per change when two broker processes sweep one database', async () => {
    t = await startTestBroker();
    const ids: string[] = [];
    for (let i = 0; i < 25; i += 1) {
      ids.push((await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ ...body, ttl_seconds: 60 })).body.request_id);
    }
    const pending = await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send({ ...body, scopes: ['model:deploy'] });
    const later = t.clock() + 25 * 3600_000; // every grant and the pending request past due; a key rotation due
    const configFile = join(t.dir, 'config.json');
    writeFileSync(configFile, JSON.stringify(baseConfig(t.dir, t.issuers, t.db.url)));

    const child = spawn(process.execPath, ['--import', 'tsx', 'test/helpers/run-jobs.ts', configFile, String(later), '30'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    await until(() => output.includes('ready'), 15_000);
    t.clock.set(later);
    for (let i = 0; i < 30; i += 1) {
      await t.broker.scheduler.runAll();
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(await exited).toBe(0);

    for (const id of ids) expect(await expiredEvents(t, id)).toHaveLength(1);
    expect((await allEvents(t)).filter((e) => e.type === 'request.expired' && e.requestId === pending.body.request_id)).toHaveLength(1);
    expect((await allEvents(t)).filter((e) => e.type === 'key.rotated')).toHaveLength(2); // the first key, and one rotation
    expect((await t.broker.store.keys.active()).length).toBeLessThanOrEqual(2);
    expect(verifyChain((await allEvents(t)))).toMatchObject({ ok: true });
  });
});

describe('scheduler jobs', () => {
  const quietLogs: string[] = [];
  const logger = createLogger({ destination: { write: (line: string) => void quietLogs.push(line) } });

  it('survive a job that throws: logged, counted, and run again on the next tick', async () => {
    t = await startTestBroker();
    let runs = 0;
    const scheduler = createScheduler({
      jobs: {
        flaky() {
          runs += 1;
          if (runs === 1) throw new Error('database is locked');
          return 0;
        },
      },
      intervalMs: 1_000,
      logger,
      metrics: createMetrics(t.broker.store),
    });
    await scheduler.start();
    await until(() => runs >= 2, 5_000);
    await scheduler.stop();
    const failure = quietLogs.map((line) => JSON.parse(line)).find((line) => line.job === 'flaky');
    expect(failure).toMatchObject({ level: 'error', err: { message: 'database is locked' } });
  });

  it('end a run after the batch in hand when the scheduler stops', async () => {
    t = await startTestBroker();
    let batches = 0;
    const scheduler = createScheduler({
      jobs: {
        async backlog(stopping) {
          for (;;) {
            batches += 1;
            await new Promise((resolve) => setTimeout(resolve, 20));
            if (stopping?.aborted) return batches;
          }
        },
      },
      intervalMs: 60_000,
      logger,
      metrics: createMetrics(t.broker.store),
    });
    void scheduler.start();
    await until(() => batches >= 3);
    await scheduler.stop();
    const atStop = batches;
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(batches).toBe(atStop);
  });

  it('never overlap a run of the same job', async () => {
    t = await startTestBroker();
    let running = 0;
    let most = 0;
    let runs = 0;
    const scheduler = createScheduler({
      jobs: {
        async slow() {
          running += 1;
          runs += 1;
          most = Math.max(most, running);
          await new Promise((resolve) => setTimeout(resolve, 1_500));
          running -= 1;
          return 0;
        },
      },
      intervalMs: 1_000,
      logger,
      metrics: createMetrics(t.broker.store),
    });
    await scheduler.start();
    // Ticks came every second while the first run took 1.5 s: the second run waited for it.
    await until(() => runs >= 2);
    await scheduler.stop();
    expect(most).toBe(1);
  });
});
