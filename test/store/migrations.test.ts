import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { startTestBroker } from '../helpers/broker.js';
import { createTestDatabase, ENGINE } from '../helpers/engine.js';
import { tempDir } from '../helpers/temp.js';

/**
 * Several processes on one database start at once (the workers of `listen.workers`, brokers
 * side by side): one applies the migrations, the others wait for it, however long it takes,
 * and find nothing left to do. PostgreSQL's wait is tested in postgres-outages.test.ts.
 */

/** Another process holding SQLite's write lock for `ms`, as one applying a long migration does. */
async function holdWriteLock(file: string, ms: number): Promise<{ exited: Promise<unknown> }> {
  const child = spawn(
    process.execPath,
    [
      '-e',
      `const db = new (require('better-sqlite3'))(process.argv[1]);
       db.exec('BEGIN IMMEDIATE');
       process.stdout.write('held\\n');
       setTimeout(() => { db.exec('COMMIT'); db.close(); }, Number(process.argv[2]));`,
      file,
      String(ms),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const exited = once(child, 'exit');
  await once(child.stdout, 'data');
  return { exited };
}

describe.runIf(ENGINE === 'sqlite')('a broker starting while another process migrates its SQLite file', () => {
  it('waits for it past the 5 s a write waits, then starts on the migrated file', { timeout: 60_000 }, async () => {
    const dir = tempDir('jit-migrating-');
    const db = await createTestDatabase(dir);
    const first = await startTestBroker({ dir, db });
    for (let i = 0; i < 20; i += 1) {
      await first.http.post('/v1/credentials').set({ Authorization: `Bearer ${await first.as.pipeline()}` }).send({ task_id: `t-${i}`, scopes: ['artifacts:read'], audience: 'registry.acme.internal' });
    }
    await first.close();
    // Statistics never gathered (a database from a release before they were): the start would
    // gather them, which takes the write lock too.
    await db.sql('DROP TABLE IF EXISTS sqlite_stat1');
    await db.drop();

    const other = await holdWriteLock(db.url, 7_000);
    const started = Date.now();
    const t = await startTestBroker({ dir, db });
    try {
      expect(Date.now() - started).toBeGreaterThan(6_000);
      expect((await t.http.get('/readyz')).status).toBe(200);
    } finally {
      await t.close();
      await other.exited;
    }
  });
});
