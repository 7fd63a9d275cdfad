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
  if (creating) mkdirSync(dirname(path), { recursive: true });
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
  // Keeps the query planner's statistics current (cheap; SQLite's own recommendation).
  if (!options.readonly) db.pragma('optimize = 0x10002');
  return db;
}

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
 * transaction with its bookkeeping row. Taking the write lock first (IMMEDIATE) lets two
 * processes start at once: the second sees the first's work and skips it. A database that a
 * newer release has migrated is refused before anything is written (`SchemaTooNew`).
 */
export function migrate(db: Db, dir: string = migrationsDir()): number[] {
  const newer = unknownSchemaVersions(db, dir);
  if (newer.length > 0) throw new SchemaTooNew(newer);
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL) STRICT`);
  const files = migrationFiles(dir);

  const isApplied = db.prepare<[number], { version: number }>('SELECT version FROM schema_migrations WHERE version = ?');
  const record = db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)');
  const applied: number[] = [];
  for (const file of files) {
    db.transaction(() => {
      if (isApplied.get(file.version)) return;
      db.exec(readFileSync(`${dir}/${file.name}`, 'utf8'));
      record.run(file.version, file.name, new Date().toISOString());
      applied.push(file.version);
    }).immediate();
  }
  return applied;
}
