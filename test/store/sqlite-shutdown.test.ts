import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/shared/clock.js';
import { openStore } from '../../src/store/index.js';
import { ENGINE } from '../helpers/engine.js';
import { tempDir } from '../helpers/temp.js';

/**
 * Closing a SQLite store refreshes the planner's statistics (`PRAGMA optimize`), which needs the
 * write lock. Another process may hold it at that moment (a second worker, a replica of the
 * scheduler): then shutting down must still end cleanly, never throw SQLITE_BUSY out of close()
 * and skip the rest of the shutdown, nor wait for the other process.
 */

let holder: ChildProcess | undefined;
afterEach(() => {
  holder?.kill('SIGKILL');
  holder = undefined;
});

/** Another process that takes the write lock on `file` and keeps it until killed. */
async function holdWriteLock(file: string): Promise<ChildProcess> {
  const script = `
    const Database = require('better-sqlite3');
    const db = new Database(${JSON.stringify(file)});
    db.exec('BEGIN IMMEDIATE');
    db.exec('UPDATE readiness_probe SET at = at + 1 WHERE id = 1');
    process.stdout.write('locked\\n');
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [chunk] = (await once(child.stdout as NodeJS.ReadableStream, 'data')) as [Buffer];
  expect(chunk.toString()).toBe('locked\n');
  return child;
}

describe.runIf(ENGINE === 'sqlite')('closing a SQLite store', () => {
  it('ends cleanly, and at once, while another process holds the write lock', async () => {
    const file = join(tempDir('jit-shutdown-'), 'broker.db');
    const store = await openStore(file, systemClock);
    await store.append([{ type: 'config.loaded', data: {} }]);
    holder = await holdWriteLock(file);
    // The other process never lets go: a close that waited for it would never end.
    await expect(store.close()).resolves.toBeUndefined();
  });
});
