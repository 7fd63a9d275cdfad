import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import YAML from 'yaml';
import { afterEach, describe, expect, it } from 'vitest';
import { LOCK_WAIT_MS } from '../../src/store/sqlite/writer.js';
import { baseConfig, bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { ENGINE } from '../helpers/engine.js';
import { until } from '../helpers/process.js';

/**
 * A reload is recorded as `config.loaded` before it applies (CONTRACT section 7, README
 * "Reloading"): while its record is not yet durable, every request is judged by the running rules,
 * so none is ever judged by rules the audit log does not show. The record is held from behind the
 * broker's back (the chain's lock on PostgreSQL, the write lock on SQLite) and the rules in force
 * are looked at while the reload waits on it.
 */
describe('a reload waiting for its config.loaded to be recorded', () => {
  let t: TestBroker | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  /** The pipelines' policy narrowed to artifacts:read: logs:read, granted now, is refused under it. */
  const narrowed = (broker: TestBroker) => {
    const raw = baseConfig(broker.dir, broker.issuers, broker.db.url) as Record<string, any>;
    raw.policies[0].scopes = ['artifacts:read'];
    const file = join(broker.dir, 'broker.yaml');
    writeFileSync(file, YAML.stringify(raw));
    return file;
  };
  const askLogs = async (broker: TestBroker) =>
    (await broker.http.post('/v1/credentials').set(bearer(await broker.as.pipeline())).send({ task_id: 'reload', scopes: ['logs:read'], audience: 'x' })).status;
  const reloadRecords = async (broker: TestBroker) =>
    (await broker.db.sql<{ data: string }>(`SELECT data FROM audit_events WHERE type = 'config.loaded' ORDER BY seq`)).map((row) => JSON.parse(row.data).trigger);

  it.runIf(ENGINE === 'postgres')('judges every request by the running rules until the record is committed, then by the new', async () => {
    t = await startTestBroker();
    const running = t.broker.settings.current();
    const file = narrowed(t);
    const holder = new pg.Client({ connectionString: t.db.url });
    await holder.connect();
    try {
      await holder.query('SELECT pg_advisory_lock(7596286014052352340)'); // the lock append_audit_events takes
      const reloading = t.broker.reload(file, {});
      // The reload waits on the chain's lock: it has read and compiled the file, and appends config.loaded.
      // (This database's locks only: other test files share the server.)
      const waiting = `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                       WHERE d.datname = current_database() AND l.locktype = 'advisory' AND NOT l.granted`;
      await until(async () => (await holder.query(waiting)).rows[0].n > 0);
      expect(t.broker.settings.current()).toBe(running);
      await holder.query('SELECT pg_advisory_unlock(7596286014052352340)');
      expect(await reloading).toMatchObject({ status: 'applied' });
    } finally {
      await holder.end();
    }
    expect(t.broker.settings.current()).not.toBe(running);
    expect(await askLogs(t)).toBe(403);
    expect(await reloadRecords(t)).toEqual(['start', 'reload']);
  });

  it.runIf(ENGINE === 'sqlite')('judges every request by the running rules while the record waits for the write lock, and keeps them when it cannot be written', async () => {
    t = await startTestBroker();
    const running = t.broker.settings.current();
    const file = narrowed(t);
    await t.db.sql('BEGIN IMMEDIATE'); // another connection holds the write lock
    try {
      const reloading = t.broker.reload(file, {});
      let settled = false;
      void reloading.finally(() => (settled = true));
      // The broker's writes wait LOCK_WAIT_MS by its clock (the test's, which stands still), then
      // fail. The clock moves only right after a look at the rules in force: the move that fails
      // config.loaded's append comes after the reload queued it, so one look falls while it waits.
      while (!settled) {
        expect(t.broker.settings.current()).toBe(running);
        t.clock.advance(LOCK_WAIT_MS);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      expect(await reloading).toMatchObject({ status: 'refused', problems: ['the config.loaded event could not be recorded'] });
    } finally {
      await t.db.sql('ROLLBACK');
    }
    expect(t.broker.settings.current()).toBe(running);
    expect(await askLogs(t)).toBe(201);
    expect(await reloadRecords(t)).toEqual(['start']);
  });
});
