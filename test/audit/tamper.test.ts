import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { canonicalEvent, chainHash } from '../../src/shared/chain-hash.js';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { runCli } from '../helpers/cli.js';
import { ENGINE } from '../helpers/engine.js';

let t: TestBroker;
beforeEach(async () => {
  t = await startTestBroker();
  for (let i = 0; i < 3; i += 1) {
    await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ task_id: `t${i}`, scopes: ['artifacts:read'], audience: 'x' });
  }
  await t.broker.close(); // what follows happens behind the broker's back
  await t.db.unguardAuditLog(); // an intruder with write access drops the guards first
});
afterEach(async () => {
  await t.close();
});

interface StoredEvent {
  seq: number | string;
  at: string;
  type: string;
  actor_iss: string | null;
  actor_sub: string | null;
  request_id: string | null;
  data: string;
  prev_hash: string;
}

/** The chain's verdict online, and offline on the file where the engine has one. */
async function verdicts() {
  const offline = ENGINE === 'sqlite' ? await runCli(['audit', 'verify', '--db', t.db.url]) : undefined;
  await t.restart();
  const online = await t.http.get('/v1/audit/verify').set(bearer(await t.as.person('ivy', ['auditors'])));
  return { offline, online: online.body };
}

describe('a tampered audit log', () => {
  it('verifies while intact, online and offline', async () => {
    const { offline, online } = await verdicts();
    if (offline) {
      expect(offline.code).toBe(0);
      expect(offline.stdout).toMatch(/^ok: \d+ events, head [0-9a-f]{64}\n$/);
    }
    expect(online).toMatchObject({ ok: true });
  });

  it('is caught at the edited event when its bytes change', async () => {
    await t.db.sql(`UPDATE audit_events SET data = replace(data, '"t1"', '"t9"') WHERE seq = 5`);
    const { offline, online } = await verdicts();
    if (offline) {
      expect(offline.code).toBe(65); // tampered: distinct from 66, cannot read
      expect(offline.stdout).toBe('BROKEN: the chain fails at seq 5\n');
    }
    expect(online).toEqual({ ok: false, first_bad_seq: 5 });
  });

  it('is caught at the next event when the edited one is re-hashed to hide it', async () => {
    const [row] = await t.db.sql<StoredEvent>('SELECT * FROM audit_events WHERE seq = 5');
    if (!row) throw new Error('no event 5');
    const edited = {
      seq: Number(row.seq),
      at: row.at,
      type: row.type,
      actor: row.actor_iss === null || row.actor_sub === null ? null : { iss: row.actor_iss, sub: row.actor_sub },
      requestId: row.request_id,
      data: { ...(JSON.parse(row.data) as Record<string, unknown>), task_id: 't9' },
    };
    await t.db.sql('UPDATE audit_events SET data = ?, hash = ? WHERE seq = 5', [JSON.stringify(edited.data), chainHash(row.prev_hash, canonicalEvent(edited))]);
    expect((await verdicts()).online).toEqual({ ok: false, first_bad_seq: 6 });
  });

  it('is caught where the stored text is not what was hashed, though JSON.parse reads the same (a duplicate key)', async () => {
    const [row] = await t.db.sql<StoredEvent>(`SELECT * FROM audit_events WHERE type = 'request.created' ORDER BY seq LIMIT 1`);
    if (!row) throw new Error('no request.created event');
    // SQL's JSON functions read the first task_id, JSON.parse the last: the original.
    await t.db.sql('UPDATE audit_events SET data = ? WHERE seq = ?', [`{"task_id":"FORGED",${row.data.slice(1)}`, row.seq]);
    const { offline, online } = await verdicts();
    if (offline) expect(offline.stdout).toBe(`BROKEN: the chain fails at seq ${row.seq}\n`);
    expect(online).toEqual({ ok: false, first_bad_seq: Number(row.seq) });
  });

  it('is caught where an event the broker itself recorded is given an actor\'s issuer', async () => {
    const [row] = await t.db.sql<StoredEvent>('SELECT * FROM audit_events WHERE actor_iss IS NULL ORDER BY seq LIMIT 1');
    if (!row) throw new Error('no event without an actor');
    await t.db.sql('UPDATE audit_events SET actor_iss = ? WHERE seq = ?', ['https://sso.test', row.seq]);
    expect((await verdicts()).online).toEqual({ ok: false, first_bad_seq: Number(row.seq) });
  });

  it('is caught where an event was deleted', async () => {
    await t.db.sql('DELETE FROM audit_events WHERE seq = 4');
    const { offline, online } = await verdicts();
    if (offline) expect(offline.stdout).toBe('BROKEN: the chain fails at seq 4\n');
    expect(online).toEqual({ ok: false, first_bad_seq: 4 });
  });
});
