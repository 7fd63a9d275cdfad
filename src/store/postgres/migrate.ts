import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../shared/package.js';
import { SchemaTooNew } from '../shared.js';
import type { Pool } from './client.js';

const migrationsDir = () => join(packageRoot(), 'migrations', 'postgres');
const MIGRATION_FILE = /^(\d+)_[a-z0-9_]+\.sql$/;
/** A session lock only migrations take: replicas starting at the same moment apply each file once. */
const MIGRATION_LOCK = 7596286014052352341n;

/**
 * Applies the numbered SQL files of `migrations/postgres/` not yet applied, in order, each in
 * its own transaction with its bookkeeping row, under a lock that the other replicas wait on.
 * A database that a newer release has migrated is refused (`SchemaTooNew`).
 */
export async function migratePostgres(pool: Pool, dir: string = migrationsDir()): Promise<number[]> {
  const files = readdirSync(dir)
    .filter((name) => MIGRATION_FILE.test(name))
    .map((name) => ({ name, version: Number(MIGRATION_FILE.exec(name)?.[1]) }))
    .sort((a, b) => a.version - b.version);
  if (new Set(files.map((file) => file.version)).size !== files.length) throw new Error(`${dir}: two migrations share a number`);

  const client = await pool.raw.connect();
  const applied: number[] = [];
  try {
    // Not a request's session: a replica waits for another's migrations however long they take,
    // and a migration of a large table may run longer than a request's 15 s. This connection is
    // closed after, not given back to the pool with these settings.
    await client.query('SET lock_timeout = 0; SET statement_timeout = 0');
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)`);
    const done = new Set((await client.query<{ version: number }>('SELECT version FROM schema_migrations')).rows.map((r) => r.version));
    // Migrated by a newer release: refused before anything is written, as on SQLite.
    const known = new Set(files.map((file) => file.version));
    const newer = [...done].filter((version) => !known.has(version)).sort((a, b) => a - b);
    if (newer.length > 0) throw new SchemaTooNew(newer);
    for (const file of files) {
      if (done.has(file.version)) continue;
      await client.query('BEGIN');
      try {
        await client.query(readFileSync(`${dir}/${file.name}`, 'utf8'));
        await client.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [
          file.version,
          file.name,
          new Date().toISOString(),
        ]);
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK');
        throw error;
      }
      applied.push(file.version);
    }
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => {});
    client.release(true);
  }
  return applied;
}
