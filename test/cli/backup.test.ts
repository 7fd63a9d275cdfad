import { chmodSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyStoredChain } from '../../src/audit/index.js';
import { openSqliteReadOnly } from '../../src/store/index.js';
import { baseConfig, bearer, createTestIssuers, startTestBroker, type TestIssuers } from '../helpers/broker.js';
import { runCli } from '../helpers/cli.js';
import { startBroker, until, type BrokerProcess } from '../helpers/process.js';

/** What a database file holds, read on a connection of its own. */
async function inspect(file: string) {
  const store = openSqliteReadOnly(file, Date.now);
  try {
    const count = (sql: string) => (store.db.prepare(sql).get() as { n: number }).n;
    return {
      verdict: await verifyStoredChain(store.events),
      issuances: count('SELECT count(*) AS n FROM issuances'),
      issuedEvents: count(`SELECT count(*) AS n FROM audit_events WHERE type = 'token.issued'`),
      requests: count('SELECT count(*) AS n FROM requests'),
      createdEvents: count(`SELECT count(*) AS n FROM audit_events WHERE type = 'request.created'`),
    };
  } finally {
    await store.close();
  }
}

describe('jit backup and jit restore', () => {
  let dir: string;
  let issuers: TestIssuers;
  let broker: BrokerProcess & { url: string };
  let database: string;
  let backupFile: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'jit-backup-test-'));
    issuers = await createTestIssuers();
    database = join(dir, 'live', 'broker.db');
    mkdirSync(join(dir, 'live'));
    const configFile = join(dir, 'broker.yaml');
    writeFileSync(configFile, YAML.stringify(baseConfig(join(dir, 'live'), issuers, database)));
    broker = await startBroker(configFile);
  });
  afterAll(async () => {
    broker?.child.kill('SIGTERM');
    await broker?.exited;
    rmSync(dir, { recursive: true, force: true });
  });

  it('copies a database while a broker process writes to it, consistently, and verifies the copy', async () => {
    // Eight callers issue tokens back to back in the broker process until the backup is done.
    let issued = 0;
    let stop = false;
    const token = await issuers.ci.token('repo:acme/app:ref:refs/heads/main', { repository: 'acme/app', actor: 'pat' }, { now: Date.now() });
    const caller = async (n: number) => {
      for (let i = 0; !stop; i += 1) {
        const response = await fetch(`${broker.url}/v1/credentials`, {
          method: 'POST',
          headers: { ...bearer(token), 'content-type': 'application/json' },
          body: JSON.stringify({ task_id: `load-${n}-${i}`, scopes: ['artifacts:read'], audience: 'registry.acme.internal' }),
        });
        expect(response.status).toBe(201);
        issued += 1;
      }
    };
    const load = Promise.all(Array.from({ length: 8 }, (_, n) => caller(n)));
    await until(() => issued >= 40);

    backupFile = join(dir, 'broker.backup.db');
    const result = await runCli(['backup', '--db', database, '--out', backupFile, '--json']);
    const before = issued;
    await until(() => issued >= before + 20); // the broker went on writing after the copy
    stop = true;
    await load;

    expect(result).toMatchObject({ code: 0, stderr: '' });
    const reported = JSON.parse(result.stdout) as { backup: string; events: number; head: string };
    const copy = await inspect(backupFile);
    expect(copy.verdict).toEqual({ ok: true, events: reported.events, head: reported.head });
    // One snapshot: every issuance has its token.issued event and every request its request.created.
    expect(copy.issuances).toBe(copy.issuedEvents);
    expect(copy.requests).toBe(copy.createdEvents);
    expect(copy.issuances).toBeGreaterThanOrEqual(40);
    expect(copy.issuances).toBeLessThan(issued);
    expect(statSync(backupFile).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir).filter((name) => name.includes('partial'))).toEqual([]);
  });

  it('never overwrites, and sends PostgreSQL to pg_dump', async () => {
    expect(await runCli(['backup', '--db', database, '--out', backupFile])).toMatchObject({ code: 1, stderr: expect.stringContaining('already exists') });
    expect(await runCli(['backup', '--db', 'postgres://broker@db.internal/broker', '--out', join(dir, 'pg.db')])).toMatchObject({
      code: 1,
      stderr: expect.stringContaining('pg_dump'),
    });
    expect(await runCli(['backup', '--db', database])).toMatchObject({ code: 2 });
    // Not even what the first look cannot see: a dangling symlink (or a file written at --out
    // while the copy ran) is left as it was, never replaced.
    const dangling = join(dir, 'dangling.db');
    symlinkSync(join(dir, 'nowhere'), dangling);
    expect(await runCli(['backup', '--db', database, '--out', dangling])).toMatchObject({ code: 1, stderr: expect.stringContaining('already exists') });
    expect(lstatSync(dangling).isSymbolicLink()).toBe(true);
    expect(readdirSync(dir).filter((name) => name.includes('partial'))).toEqual([]);
  });

  it('never writes into a directory every user may write to, sticky or not', async () => {
    // There anyone may put a file named after the copy's plus -wal (or -journal) beside it, which
    // SQLite applies to the copy when it opens it: a backup rewritten before it is checked and named.
    for (const mode of [0o777, 0o1777]) {
      const shared = join(dir, `shared-${mode.toString(8)}`);
      mkdirSync(shared);
      chmodSync(shared, mode);
      const result = await runCli(['backup', '--db', database, '--out', join(shared, 'broker.db')]);
      expect(result).toMatchObject({ code: 1, stderr: expect.stringContaining(`${shared} is writable by every user (mode ${mode.toString(8)})`) });
      expect(readdirSync(shared)).toEqual([]);
    }
  });

  it('refuses to restore over a database a broker has open, and changes nothing', async () => {
    const before = await inspect(database);
    const result = await runCli(['restore', '--from', backupFile, '--db', database]);
    expect(result).toMatchObject({ code: 1, stderr: expect.stringContaining('is open in another process (a broker?): stop it first; nothing was changed') });
    expect((await inspect(database)).verdict).toEqual(before.verdict);
    expect(readdirSync(join(dir, 'live')).filter((name) => name.includes('before-restore') || name.includes('restoring'))).toEqual([]);
  });

  it('restores into place a backup a broker then starts on, its chain intact', async () => {
    const target = mkdtempSync(join(tmpdir(), 'jit-restore-test-'));
    try {
      // The signing keys are backed up with the database (README, "Backups").
      cpSync(join(dir, 'live', 'keys'), join(target, 'keys'), { recursive: true });
      const result = await runCli(['restore', '--from', backupFile, '--db', join(target, 'broker.db')]);
      expect(result.code).toBe(0);
      const copy = await inspect(backupFile);
      expect(result.stdout).toContain(`${copy.verdict.ok && copy.verdict.events} events, chain head ${copy.verdict.ok && copy.verdict.head}`);
      expect(statSync(join(target, 'broker.db')).mode & 0o777).toBe(0o600);

      const t = await startTestBroker({ dir: target, issuers });
      try {
        const verdict = await t.http.get('/v1/audit/verify').set(bearer(await t.as.person('ivy', ['auditors'])));
        expect(verdict.body).toMatchObject({ ok: true, events: (copy.verdict.ok ? copy.verdict.events : 0) + 1 }); // and this start's config.loaded
        expect((await t.http.get('/readyz')).status).toBe(200);
      } finally {
        await t.close();
      }
    } finally {
      rmSync(target, { recursive: true, force: true });
    }
  });

  it('keeps the database it replaces, and refuses a backup whose chain is broken', async () => {
    const target = mkdtempSync(join(tmpdir(), 'jit-restore-test-'));
    try {
      const file = join(target, 'broker.db');
      expect((await runCli(['restore', '--from', backupFile, '--db', file])).code).toBe(0);
      const again = await runCli(['restore', '--from', backupFile, '--db', file, '--json']);
      expect(again.code).toBe(0);
      const { previous } = JSON.parse(again.stdout) as { previous: string };
      expect(previous).toMatch(/broker\.db\.before-restore-/);
      expect((await inspect(previous)).verdict.ok).toBe(true);

      // A tampered copy: one event's data changed behind the triggers' back.
      const tampered = join(target, 'tampered.db');
      cpSync(backupFile, tampered);
      const db = new Database(tampered);
      db.exec('DROP TRIGGER audit_events_no_update');
      db.prepare(`UPDATE audit_events SET data = '{"scopes":["db:admin"]}' WHERE seq = 3`).run();
      db.close();
      const refused = await runCli(['restore', '--from', tampered, '--db', join(target, 'other.db')]);
      expect(refused).toMatchObject({ code: 1, stderr: expect.stringContaining(`the audit chain of ${tampered} is broken at seq 3`) });
      expect(existsSync(join(target, 'other.db'))).toBe(false);
    } finally {
      rmSync(target, { recursive: true, force: true });
    }
  });

  it('refuses a backup made by a newer release', async () => {
    const target = mkdtempSync(join(tmpdir(), 'jit-restore-test-'));
    try {
      const newer = join(target, 'newer.db');
      cpSync(backupFile, newer);
      const db = new Database(newer);
      db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, ?, ?)').run('999_future.sql', new Date().toISOString());
      db.close();
      const refused = await runCli(['restore', '--from', newer, '--db', join(target, 'broker.db')]);
      expect(refused).toMatchObject({ code: 1, stderr: expect.stringContaining('schema version 999, which this release does not know') });
    } finally {
      rmSync(target, { recursive: true, force: true });
    }
  });
});
