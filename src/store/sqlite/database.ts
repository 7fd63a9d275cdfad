import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import { packageRoot } from '../../shared/package.js';
import { SchemaTooNew } from '../shared.js';

export type Db = Database.Database;

const migrationsDir = () => join(packageRoot(), 'migrations', 'sqlite');
const MIGRATION_FILE = /^(\d+)_[a-z0-9_]+\.sql$/;

/**
 * Opens the broker's SQLite file: WAL so readers never block the writer; synchronous=FULL
 * because a token may only leave once its record is durable (the store's writer then takes the
 * syncing over, off the event loop: see `walSync`); a busy timeout so two broker processes on
 * one file wait for each other instead of failing.
 */
export function openDatabase(path: string, options: { readonly?: boolean } = {}): Db {
  const creating = !options.readonly && path !== ':memory:' && !existsSync(path);
  if (creating) mkdirSync(dirname(path), { recursive: true, mode: 0o755 }); // never writable by others, whatever the umask (see refuseSharedDirectory)
  const db = new Database(path, { readonly: options.readonly ?? false, fileMustExist: options.readonly ?? false });
  // The audit log is nobody else's business; SQLite gives its -wal and -shm files the same mode.
  if (creating) chmodSync(path, 0o600);
  db.pragma('busy_timeout = 5000');
  if (!options.readonly) {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
  }
  db.pragma('foreign_keys = ON');
  db.pragma('mmap_size = 268435456');
  if (!options.readonly) refreshStatistics(db);
  return db;
}

const isBusy = (error: unknown) => error instanceof Database.SqliteError && error.code.startsWith('SQLITE_BUSY');

/**
 * Keeps the query planner's statistics current (cheap; SQLite's own recommendation). Gathering
 * them takes the write lock, which another process may hold for minutes (its migrations): then
 * they are gathered at a later start, never waited for.
 */
function refreshStatistics(db: Db): void {
  const timeout = db.pragma('busy_timeout', { simple: true }) as number;
  db.pragma('busy_timeout = 0');
  try {
    db.pragma('optimize = 0x10002');
  } catch (error) {
    if (!isBusy(error)) throw error;
  } finally {
    db.pragma(`busy_timeout = ${timeout}`);
  }
}

/** How long one try for the write lock blocks while another process migrates, and the pause between tries. */
const MIGRATION_LOCK_TRY_MS = 50;

/** The numbered migration files of `dir`, in order. */
export function migrationFiles(dir: string = migrationsDir()): { name: string; version: number }[] {
  const files = readdirSync(dir)
    .filter((name) => MIGRATION_FILE.test(name))
    .map((name) => ({ name, version: Number(MIGRATION_FILE.exec(name)?.[1]) }))
    .sort((a, b) => a.version - b.version);
  if (new Set(files.map((file) => file.version)).size !== files.length) throw new Error(`${dir}: two migrations share a number`);
  return files;
}

/**
 * The schema versions a database holds that this build does not know: migrations applied by a
 * newer release. Such a database is refused, by the broker and by `jit restore`: an older
 * release would write rows a newer schema does not expect. Empty for a database not yet created.
 */
export function unknownSchemaVersions(db: Db, dir: string = migrationsDir()): number[] {
  const table = db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).get();
  if (!table) return [];
  const known = new Set(migrationFiles(dir).map((file) => file.version));
  const applied = db.prepare('SELECT version FROM schema_migrations ORDER BY version').all() as { version: number }[];
  return applied.map((row) => row.version).filter((version) => !known.has(version));
}

/**
 * Applies the numbered SQL files of `migrations/` not yet applied, in order, each in its own
 * transaction with its bookkeeping row, under the write lock (IMMEDIATE). Processes starting at
 * once (the workers of `listen.workers`, brokers side by side) take turns: each file is applied by
 * whichever takes the lock first, and the others find it done. A process that finds the lock
 * held waits for it however long the migration takes, as on PostgreSQL, trying again off the
 * event loop rather than failing once a request's busy timeout has passed. A database that a
 * newer release has migrated is refused before anything is written (`SchemaTooNew`), checked
 * under the lock each time: what another process was applying may have been a newer release's.
 */
export async function migrate(db: Db, dir: string = migrationsDir()): Promise<number[]> {
  const files = migrationFiles(dir);
  const known = new Set(files.map((file) => file.version));
  const applyOnce = (file: { name: string; version: number }) =>
    db
      .transaction(() => {
        db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
          version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL) STRICT`);
        const applied = (db.prepare('SELECT version FROM schema_migrations').all() as { version: number }[]).map((row) => row.version);
        const newer = applied.filter((version) => !known.has(version));
        if (newer.length > 0) throw new SchemaTooNew(newer);
        if (applied.includes(file.version)) return false;
        db.exec(readFileSync(`${dir}/${file.name}`, 'utf8'));
        db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(file.version, file.name, new Date().toISOString());
        return true;
      })
      .immediate();

  const timeout = db.pragma('busy_timeout', { simple: true }) as number;
  db.pragma(`busy_timeout = ${MIGRATION_LOCK_TRY_MS}`);
  try {
    const applied: number[] = [];
    for (const file of files) {
      for (;;) {
        try {
          if (applyOnce(file)) applied.push(file.version);
          break;
        } catch (error) {
          if (!isBusy(error)) throw error;
        }
        await new Promise((resolve) => setTimeout(resolve, MIGRATION_LOCK_TRY_MS));
      }
    }
    return applied;
  } finally {
    db.pragma(`busy_timeout = ${timeout}`);
  }
}
