import { existsSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { Clock } from '../../shared/clock.js';
import { StartRefused } from '../../shared/errors.js';
import type { Store } from '../contract.js';
import { createStore } from '../store.js';
import { migrate, openDatabase, type Db } from './database.js';
import { createSqliteEngine } from './engine.js';

export { migrate, unknownSchemaVersions } from './database.js';
export type { Db } from './database.js';

/**
 * Opens (creating if need be) and migrates the database file, then returns the store over it:
 * one connection for the writer, one for reads, so that reads never wait on the write lock.
 */
export async function openSqliteStore(path: string, clock: Clock, datasync?: (fd: number) => Promise<void>): Promise<Store> {
  refuseSharedDirectory(path);
  const db = await unusableRefused(path, () => openDatabase(path));
  let reader;
  try {
    await unusableRefused(path, () => migrate(db));
    reader = await unusableRefused(path, () => openDatabase(path));
    reader.pragma('query_only = ON');
  } catch (error) {
    db.close();
    reader?.close();
    throw error;
  }
  // The writer takes the write lock without waiting: when another process holds it, the writer
  // retries on a timer instead of blocking this process's event loop (see writer.ts).
  db.pragma('busy_timeout = 0');
  return createStore(createSqliteEngine(db, clock, reader, datasync), clock);
}

/**
 * SQLite applies to a database the -wal (or hot -journal) file it finds beside it when it opens
 * it. In a directory every user may write to (sticky or not: anyone may make a file of their own
 * there), anyone could put one there while the broker is stopped and rewrite its grants and its
 * audit log: refused, as a keyDir anyone may write to is. A directory not made yet is made safe.
 */
function refuseSharedDirectory(path: string): void {
  if (path === ':memory:') return;
  const dir = dirname(path);
  if (!existsSync(dir)) return;
  const mode = statSync(dir).mode;
  if ((mode & 0o002) !== 0) {
    throw new StartRefused(
      'database_dir_unsafe',
      `${dir} (the directory of the database) is writable by every user (mode ${(mode & 0o7777).toString(8)}): anyone could slip a file into the database there; chmod o-w it, or move the database`,
    );
  }
}

/** SQLite's answers for a file the operator must fix before the broker can run on it. */
const UNUSABLE = /^SQLITE_(NOTADB|CORRUPT|READONLY|CANTOPEN|PERM|AUTH)/;

/**
 * `open` run, with a database file that cannot be used (not a database, corrupt, read-only, not
 * permitted) refused as the operator's to fix, naming the file, in one line: not a crash.
 */
async function unusableRefused<T>(path: string, open: () => T | Promise<T>): Promise<T> {
  try {
    return await open();
  } catch (error) {
    if (error instanceof Database.SqliteError && UNUSABLE.test(error.code)) {
      throw new StartRefused('database_unusable', `the database ${path} cannot be used (${error.code}: ${error.message}); check the file and its permissions, or restore it from a backup`);
    }
    throw error;
  }
}

/**
 * A database file opened read-only, for offline verification of the audit chain and backups:
 * nothing is written. Its connection is there for checks of the file itself.
 */
export function openSqliteReadOnly(path: string, clock: Clock): Store & { readonly db: Db } {
  const db = openDatabase(path, { readonly: true });
  return Object.assign(createStore(createSqliteEngine(db, clock), clock), { db });
}
