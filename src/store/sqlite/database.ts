import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';

export type Db = Database.Database;

export const MIGRATIONS_DIR = fileURLToPath(new URL('../../../migrations/sqlite/', import.meta.url));
const MIGRATION_FILE = /^(\d+)_[a-z0-9_]+\.sql$/;

/**
 * Opens the broker's SQLite file: WAL so readers never block the writer; synchronous=FULL
 * because a token may only leave once its record is durable (the writer commits many requests
 * at once, so that costs one fsync per batch, not per token); a busy timeout so two broker
 * processes on one file wait for each other instead of failing.
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
  // Keeps the query planner's statistics current (cheap; SQLite's own recommendation).
  if (!options.readonly) db.pragma('optimize = 0x10002');
  return db;
}

/**
 * Applies the numbered SQL files of `migrations/` not yet applied, in order, each in its own
 * transaction with its bookkeeping row. Taking the write lock first (IMMEDIATE) lets two
 * processes start at once: the second sees the first's work and skips it.
 */
export function migrate(db: Db, dir: string = MIGRATIONS_DIR): number[] {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL) STRICT`);
  const files = readdirSync(dir)
    .filter((name) => MIGRATION_FILE.test(name))
    .map((name) => ({ name, version: Number(MIGRATION_FILE.exec(name)?.[1]) }))
    .sort((a, b) => a.version - b.version);
  const versions = new Set(files.map((file) => file.version));
  if (versions.size !== files.length) throw new Error(`${dir}: two migrations share a number`);

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
