import { afterEach, describe, expect, it } from 'vitest';
import { SchemaTooNew } from '../../src/store/index.js';
import { startTestBroker, type TestBroker } from '../helpers/broker.js';

/**
 * Rollbacks (README, "Upgrades and rollbacks"): migrations only go forward, so an older release
 * must not run on a database a newer one has migrated. It refuses before writing anything.
 */
describe('a database migrated by a newer release', () => {
  let t: TestBroker | undefined;
  afterEach(async () => {
    await t?.close().catch(() => {});
    t = undefined;
  });

  it('is refused at start, naming the unknown version, and left as it was', async () => {
    t = await startTestBroker();
    await t.db.sql('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)', [999, '999_from_the_future.sql', new Date().toISOString()]);
    const events = await t.db.sql<{ n: number }>('SELECT count(*) AS n FROM audit_events');
    await expect(t.restart()).rejects.toThrow(SchemaTooNew);
    await expect(t.restart()).rejects.toThrow('schema version 999, which this release does not know: a newer release migrated it');
    expect(await t.db.sql<{ n: number }>('SELECT count(*) AS n FROM audit_events')).toEqual(events);
    await t.db.sql('DELETE FROM schema_migrations WHERE version = ?', [999]);
    await t.restart();
  });
});
