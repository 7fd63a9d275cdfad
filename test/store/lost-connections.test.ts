import { afterAll, describe, expect, it } from 'vitest';
import { baseConfig, createTestIssuers } from '../helpers/broker.js';
import { createTestDatabase, ENGINE, type TestDatabase } from '../helpers/engine.js';
import { startBrokerProcess, type BrokerProcess } from '../helpers/process.js';
import { tempDir } from '../helpers/temp.js';

/**
 * PostgreSQL ending the broker's sessions under load (a failover, an operator's
 * pg_terminate_backend, a proxy's restart): the replica stays up, what failed is a 503 with
 * nothing granted, and it serves again on fresh connections.
 */

let db: TestDatabase | undefined;
let broker: (BrokerProcess & { url: string }) | undefined;
afterAll(async () => {
  if (broker && broker.child.exitCode === null) {
    broker.child.kill('SIGTERM');
    await broker.exited;
  }
  await db?.drop();
});

describe.runIf(ENGINE === 'postgres')('a replica whose database sessions are ended under load', () => {
  it('stays up, answers 201 or 503, records every token it answered, and serves again', { timeout: 120_000 }, async () => {
    const dir = tempDir('jit-lost-connections-');
    db = await createTestDatabase(dir);
    const issuers = await createTestIssuers();
    const config = { ...baseConfig(dir, issuers, db.url), limits: { requestsPerMinute: 1_000_000, liveGrants: 1_000_000 }, listen: { host: '127.0.0.1', port: 0, workers: 1 } };
    broker = await startBrokerProcess(dir, 'replica', config); // baseConfig names its key-encryption key file
    const database = new URL(db.url).pathname.slice(1);
    const tokens = await Promise.all(Array.from({ length: 40 }, (_, i) => issuers.ci.token(`repo:acme/app:ref:refs/heads/c-${i}`, { repository: 'acme/app', actor: `c-${i}` })));
    const ask = (token: string, task: string) =>
      fetch(`${broker!.url}/v1/credentials`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ task_id: task, scopes: ['artifacts:read'], audience: 'registry.acme.internal' }),
        signal: AbortSignal.timeout(20_000),
      }).then(async (response) => ({ status: response.status, id: ((await response.json()) as { request_id?: string }).request_id }));

    const answers: { status: number; id?: string | undefined }[] = [];
    for (let round = 0; round < 3; round += 1) {
      let done = false;
      const load = Promise.all(tokens.map((token) => ask(token, `r${round}`))).finally(() => (done = true));
      while (!done) {
        await db.sql(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ? AND application_name = 'jit-broker' AND pid <> pg_backend_pid()`, [database]);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      answers.push(...(await load));
    }
    expect(broker.child.exitCode).toBeNull();
    expect(answers.filter((a) => a.status !== 201 && a.status !== 503)).toEqual([]);
    const issued = answers.filter((a) => a.status === 201).map((a) => a.id as string);
    const recorded = new Set((await db.sql<{ request_id: string }>('SELECT request_id FROM issuances')).map((row) => row.request_id));
    expect(issued.filter((id) => !recorded.has(id))).toEqual([]);

    expect((await ask(tokens[0] as string, 'after')).status).toBe(201);
  });
});
