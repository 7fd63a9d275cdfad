import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { inject } from 'vitest';

/**
 * Which engine this test run uses: the vitest project sets BROKER_TEST_ENGINE. Every broker test
 * runs on both; the few that look at one engine's files say so.
 */
export const ENGINE: 'sqlite' | 'postgres' = process.env.BROKER_TEST_ENGINE === 'postgres' ? 'postgres' : 'sqlite';

/** A test's own database, and a way in behind the broker's back (a second connection). */
export interface TestDatabase {
  /** What the broker's `database` setting says. */
  url: string;
  /** Runs SQL on a connection of its own; `?` placeholders on both engines. */
  sql<T = Record<string, unknown>>(text: string, params?: unknown[]): Promise<T[]>;
  /**
   * Makes every `on` of `table` fail, as a full disk would, until the returned function undoes it;
   * with `when` (an SQL condition on NEW or OLD, the same on both engines), only the rows it holds for.
   */
  failWrites(table: string, on: 'INSERT' | 'UPDATE', when?: string): Promise<() => Promise<void>>;
  /** What an intruder with write access does first: drops the guards that make the audit log append-only. */
  unguardAuditLog(): Promise<void>;
  /** Everything the database holds as text, to look for secrets in (SQLite: the raw file, free pages included). */
  contents(): Promise<string>;
  drop(): Promise<void>;
}

/** The PostgreSQL server of this test run: env DATABASE_URL, else the one the global setup started. */
export function postgresServerUrl(): string {
  const url = process.env.DATABASE_URL || (inject('postgresUrl') as string | undefined);
  if (!url) throw new Error('no PostgreSQL server: set DATABASE_URL or run through the postgres vitest project');
  return url;
}

export async function createTestDatabase(dir: string): Promise<TestDatabase> {
  return ENGINE === 'postgres' ? createPostgresDatabase() : createSqliteDatabase(join(dir, 'broker.db'));
}

function createSqliteDatabase(file: string): TestDatabase {
  let db: Database.Database | undefined;
  const open = () => (db ??= new Database(file));
  return {
    url: file,
    async sql<T>(text: string, params: unknown[] = []) {
      const statement = open().prepare(text);
      return (statement.reader ? statement.all(...params) : (statement.run(...params), [])) as T[];
    },
    async failWrites(table, on, when) {
      const name = `fail_${table}_${on.toLowerCase()}`;
      open().exec(`CREATE TRIGGER ${name} BEFORE ${on} ON ${table}${when ? ` WHEN (${when})` : ''} BEGIN SELECT RAISE(FAIL, 'disk I/O error'); END`);
      return async () => void open().exec(`DROP TRIGGER ${name}`);
    },
    async unguardAuditLog() {
      open().exec('DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;');
    },
    async contents() {
      open().pragma('wal_checkpoint(FULL)');
      return ['', '-wal']
        .map((suffix) => {
          try {
            return readFileSync(file + suffix).toString('latin1');
          } catch {
            return '';
          }
        })
        .join('');
    },
    async drop() {
      db?.close();
    },
  };
}

async function createPostgresDatabase(): Promise<TestDatabase> {
  const server = new URL(postgresServerUrl());
  const name = `jit_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: server.toString() });
  await admin.connect();
  try {
    // A copy of the run's migrated template, where there is one (test/setup/postgres.ts).
    const template = inject('postgresTemplate') as string | undefined;
    await admin.query(`CREATE DATABASE ${name}${template ? ` TEMPLATE ${template}` : ''}`);
  } finally {
    await admin.end();
  }
  const url = new URL(server);
  url.pathname = `/${name}`;
  const pool = new pg.Pool({ connectionString: url.toString(), max: 2 });
  // pool.end() resolves before its clients' sockets close, and drop() then ends their sessions
  // (DROP DATABASE ... WITH (FORCE)): pg hands that error to the pool, whose 'error' event would
  // otherwise be an uncaught exception failing the run. A session ended there is meant to end.
  pool.on('error', () => {});
  const numbered = (text: string) => {
    let n = 0;
    return text.replace(/\?/g, () => `$${(n += 1)}`);
  };
  const sql = async <T>(text: string, params: unknown[] = []) => (await pool.query(numbered(text), params)).rows as T[];
  return {
    url: url.toString(),
    sql,
    async failWrites(table, on, when) {
      const name = `fail_${table}_${on.toLowerCase()}`;
      await sql(`CREATE FUNCTION ${name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk I/O error'; END $$`);
      await sql(`CREATE TRIGGER ${name} BEFORE ${on} ON ${table} FOR EACH ROW${when ? ` WHEN (${when})` : ''} EXECUTE FUNCTION ${name}()`);
      return async () => {
        await sql(`DROP TRIGGER ${name} ON ${table}`);
        await sql(`DROP FUNCTION ${name}()`);
      };
    },
    async unguardAuditLog() {
      for (const name of ['audit_events_no_update', 'audit_events_no_delete', 'audit_events_no_truncate']) {
        await sql(`DROP TRIGGER ${name} ON audit_events`);
      }
    },
    async contents() {
      const tables = await sql<{ tablename: string }>(`SELECT tablename FROM pg_tables WHERE schemaname = 'public'`);
      const parts: string[] = [];
      for (const { tablename } of tables) {
        const rows = await sql<{ row: unknown }>(`SELECT row_to_json(t) AS row FROM "${tablename}" t`);
        parts.push(JSON.stringify(rows));
      }
      return parts.join('\n');
    },
    async drop() {
      if (pool.ended) return;
      await pool.end();
      const dropper = new pg.Client({ connectionString: server.toString() });
      await dropper.connect();
      try {
        await dropper.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await dropper.end();
      }
    },
  };
}
