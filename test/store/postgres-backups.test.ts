import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { bearer, startTestBroker } from '../helpers/broker.js';
import { ENGINE, postgresServerUrl, type TestDatabase } from '../helpers/engine.js';
import { tempDir } from '../helpers/temp.js';

/**
 * README, "Backups", PostgreSQL: the database made as "Several replicas on PostgreSQL" says,
 * dumped and restored with the commands the README gives, as it gives them, and a broker
 * started on the restored database as its own role. It needs pg_dump and pg_restore of the
 * server's major version on the PATH (pg_dump refuses a newer server): run the postgres project
 * with DATABASE_URL naming such a server where the embedded one has no tools beside it.
 */

const readme = readFileSync(resolve(import.meta.dirname, '../../README.md'), 'utf8');
const block = (language: string, marker: string) => {
  const found = [...readme.matchAll(new RegExp(`\`\`\`${language}\\n([\\s\\S]*?)\`\`\``, 'g'))].map((m) => m[1] as string).find((text) => text.includes(marker));
  if (!found) throw new Error(`no README ${language} block holds ${marker}`);
  return found;
};

const major = (text: string) => Number(/(\d+)(\.\d+)?/.exec(text)?.[1]);
const toolsMajor = () => {
  const found = spawnSync('pg_dump', ['--version'], { encoding: 'utf8' });
  return found.status === 0 ? major(found.stdout.replace(/^\D+/, '')) : undefined;
};

async function serverMajor(): Promise<number> {
  const client = new pg.Client({ connectionString: postgresServerUrl() });
  await client.connect();
  try {
    return major(((await client.query('SHOW server_version')).rows[0] as { server_version: string }).server_version);
  } finally {
    await client.end();
  }
}

const runnable = ENGINE === 'postgres' && toolsMajor() !== undefined && toolsMajor() === (await serverMajor());

describe.runIf(runnable)('README "Backups", PostgreSQL, run as written', () => {
  const suffix = randomBytes(4).toString('hex');
  const role = `jit_broker_${suffix}`;
  const restoredName = `broker_restored_${suffix}`;
  // Read when the tests run: collecting this file on SQLite reads no server.
  const adminUrl = () => new URL(postgresServerUrl());
  const as = (user: string, database: string) => {
    const url = adminUrl();
    url.username = user;
    url.password = 'readme';
    url.pathname = `/${database}`;
    return url.toString();
  };
  const adminSql = async (text: string) => {
    const client = new pg.Client({ connectionString: adminUrl().toString() });
    await client.connect();
    try {
      await client.query(text);
    } finally {
      await client.end();
    }
  };
  /** A database the test made by hand: the broker is given its URL, and drops nothing. */
  const database = (url: string) => ({ url, drop: async () => {} }) as TestDatabase;

  afterAll(async () => {
    await adminSql(`DROP DATABASE IF EXISTS ${restoredName} WITH (FORCE)`);
    await adminSql(`DROP DATABASE IF EXISTS ${role} WITH (FORCE)`);
    await adminSql(`DROP ROLE IF EXISTS ${role}`);
  });

  it('restores a database the broker, as its own role, starts on with its chain intact', { timeout: 60_000 }, async () => {
    // "once, as an administrator"
    for (const statement of block('sql', 'CREATE ROLE jit_broker').replaceAll('jit_broker', role).replace("'...'", "'readme'").split(';')) {
      const text = statement.replace(/--.*$/gm, '').trim();
      if (text) await adminSql(text);
    }
    const dir = tempDir('jit-pg-backup-');
    const live = database(as(role, role));
    const first = await startTestBroker({ dir, db: live });
    for (let i = 0; i < 3; i += 1) {
      const issued = await first.http.post('/v1/credentials').set(bearer(await first.as.pipeline())).send({ task_id: `t-${i}`, scopes: ['artifacts:read'], audience: 'registry.acme.internal' });
      expect(issued.status).toBe(201);
    }
    const auditor = await first.as.person('ivy', ['auditors']);
    const before = (await first.http.get('/v1/audit/verify').set(bearer(auditor))).body as { ok: boolean; events: number; head: string };
    expect(before.ok).toBe(true);
    await first.close();

    // The README's commands, as an administrator where they say so (PG* as psql reads them),
    // the broker's role in BROKER_DB.
    const admin = adminUrl();
    const commands = block('sh', 'pg_dump --format=custom')
      .replaceAll('jit_broker', role)
      .replaceAll('broker_restored', restoredName)
      .replaceAll('broker-....dump', 'broker-*.dump');
    execFileSync('bash', ['-e', '-o', 'pipefail', '-c', commands], {
      cwd: dir,
      env: {
        PATH: process.env.PATH,
        BROKER_DB: live.url,
        PGHOST: admin.hostname,
        PGPORT: admin.port || '5432',
        PGUSER: decodeURIComponent(admin.username),
        PGPASSWORD: decodeURIComponent(admin.password),
        PGDATABASE: 'postgres',
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });

    // "Then point one broker at the restored database", as the broker's role.
    const restored = await startTestBroker({ dir, db: database(as(role, restoredName)) });
    try {
      const verdict = (await restored.http.get('/v1/audit/verify').set(bearer(await restored.as.person('ivy', ['auditors'])))).body as { ok: boolean; events: number };
      expect(verdict.ok).toBe(true);
      expect(verdict.events).toBeGreaterThan(before.events); // and this start's config.loaded
      const issued = await restored.http.post('/v1/credentials').set(bearer(await restored.as.pipeline())).send({ task_id: 'after', scopes: ['artifacts:read'], audience: 'registry.acme.internal' });
      expect(issued.status).toBe(201);
    } finally {
      await restored.close();
    }
  });
});
