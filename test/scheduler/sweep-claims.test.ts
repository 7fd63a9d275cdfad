import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createJobs } from '../../src/scheduler/jobs.js';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { ENGINE } from '../helpers/engine.js';

/**
 * On PostgreSQL a sweep claims each due request with the locks of its holders, and a holder busy
 * on another replica keeps its own: the sweep passes over that one and takes the next due, so
 * one busy caller never holds back everyone else's expiry (the job stops at a short batch).
 */
let t: TestBroker;
beforeAll(async () => {
  t = await startTestBroker();
});
afterAll(async () => {
  await t?.close();
});

describe.runIf(ENGINE === 'postgres')('a sweep with a holder busy elsewhere', () => {
  it('expires in one run every due grant but the busy holder\'s', async () => {
    const subs = Array.from({ length: 12 }, (_, i) => `repo:acme/app:ref:refs/heads/sweep-${String(i).padStart(2, '0')}`);
    for (const sub of subs) {
      const issued = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline({}, sub))).send({ task_id: 'sweep', scopes: ['artifacts:read'], audience: 'registry.acme.internal', ttl_seconds: 60 });
      expect(issued.status).toBe(201);
      t.clock.advance(10); // the first holder's grant is the first due
    }
    t.clock.advance(3_600_000);
    // Another replica serving the first holder right now holds that holder's lock to its commit.
    const other = new pg.Client({ connectionString: t.db.url });
    await other.connect();
    await other.query('BEGIN');
    await other.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [`identity:${t.issuers.ci.iss}\n${subs[0]}`]);
    try {
      const jobs = createJobs({ store: t.broker.store, keyring: undefined as never, notifier: undefined as never, clock: t.clock, issuer: '', checkpointEvery: () => 0, batchSize: 5 });
      expect(await jobs['expire-grants']!()).toBe(11);
      const left = await t.db.sql<{ requester_sub: string }>(`SELECT requester_sub FROM requests WHERE status = 'issued'`);
      expect(left).toEqual([{ requester_sub: subs[0] }]);
    } finally {
      await other.query('ROLLBACK');
      await other.end();
    }
    expect(await createJobs({ store: t.broker.store, keyring: undefined as never, notifier: undefined as never, clock: t.clock, issuer: '', checkpointEvery: () => 0, batchSize: 5 })['expire-grants']!()).toBe(1);
  });
});
