import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { canonicalEvent, chainHash } from '../../src/audit/index.js';
import { toEvent, type EventRow } from '../../src/store/store.js';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { runCli } from '../helpers/cli.js';

let t: TestBroker;
let dbFile: string;
beforeEach(async () => {
  t = await startTestBroker();
  dbFile = join(t.dir, 'broker.db');
  for (let i = 0; i < 3; i += 1) {
    await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ task_id: `t${i}`, scopes: ['artifacts:read'], audience: 'x' });
  }
  await t.broker.close(); // what follows happens behind the broker's back
});
afterEach(async () => {
  await t.close();
});

/** An intruder with write access to the file: drops the guard triggers, then edits. */
function tamper(edit: (db: Database.Database) => void) {
  const db = new Database(dbFile);
  db.exec('DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;');
  edit(db);
  db.close();
}

async function verdicts() {
  const offline = await runCli(['audit', 'verify', '--db', dbFile]);
  await t.restart();
  const online = await t.http.get('/v1/audit/verify').set(bearer(await t.as.person('ivy', ['auditors'])));
  return { offline, online: online.body };
}

describe('a tampered audit log', () => {
  it('verifies while intact, online and offline', async () => {
    const { offline, online } = await verdicts();
    expect(offline.code).toBe(0);
    expect(offline.stdout).toMatch(/^ok: \d+ events, head [0-9a-f]{64}\n$/);
    expect(online).toMatchObject({ ok: true });
  });

  it('is caught at the edited event when its bytes change', async () => {
    tamper((db) => db.prepare(`UPDATE audit_events SET data = replace(data, '"t1"', '"t9"') WHERE seq = 5`).run());
    const { offline, online } = await verdicts();
    expect(offline.code).toBe(1);
    expect(offline.stdout).toBe('BROKEN: the chain fails at seq 5\n');
    expect(online).toEqual({ ok: false, first_bad_seq: 5 });
  });

  it('is caught at the next event when the edited one is re-hashed to hide it', async () => {
    tamper((db) => {
      const row = db.prepare('SELECT * FROM audit_events WHERE seq = 5').get() as EventRow;
      const edited = { ...toEvent(row), data: { ...toEvent(row).data, task_id: 't9' } };
      db.prepare('UPDATE audit_events SET data = ?, hash = ? WHERE seq = 5').run(JSON.stringify(edited.data), chainHash(edited.prevHash, canonicalEvent(edited)));
    });
    expect((await verdicts()).online).toEqual({ ok: false, first_bad_seq: 6 });
  });

  it('is caught where an event was deleted', async () => {
    tamper((db) => db.prepare('DELETE FROM audit_events WHERE seq = 4').run());
    const { offline, online } = await verdicts();
    expect(offline.stdout).toBe('BROKEN: the chain fails at seq 4\n');
    expect(online).toEqual({ ok: false, first_bad_seq: 4 });
  });
});
