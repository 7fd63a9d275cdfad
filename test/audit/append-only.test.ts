import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { ENGINE } from '../helpers/engine.js';

/**
 * CONTRACT section 5: the store itself refuses to rewrite the audit log, by any statement: an
 * UPDATE or DELETE, and an insert that replaces a row (SQLite's INSERT OR REPLACE deletes without
 * firing delete triggers) or puts one outside the chain, where no listing or verification reads it.
 */

let t: TestBroker;
beforeEach(async () => {
  t = await startTestBroker();
  await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ task_id: 't', scopes: ['artifacts:read'], audience: 'x' });
  await t.broker.close(); // what follows happens behind the broker's back
});
afterEach(async () => {
  await t.close();
});

const COLUMNS = '(seq, at, type, actor_iss, actor_sub, request_id, data, prev_hash, hash)';
const refused = async (text: string, params: unknown[]) => {
  const outcome = await t.db.sql(text, params).then(
    () => 'written',
    (error: Error) => error.message,
  );
  expect(outcome).toMatch(/append-only|grows only at its head|audit_events_seq_in_chain/);
};

describe('the audit log, with its guards in place', () => {
  it('refuses a row rewritten by an insert that replaces it', async () => {
    const [event] = await t.db.sql<Record<string, unknown>>('SELECT * FROM audit_events WHERE seq = 2');
    const values = [event!.seq, event!.at, 'token.revoked', event!.actor_iss, event!.actor_sub, event!.request_id, event!.data, event!.prev_hash, event!.hash];
    await refused(
      ENGINE === 'sqlite'
        ? `INSERT OR REPLACE INTO audit_events ${COLUMNS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`
        : `INSERT INTO audit_events ${COLUMNS} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (seq) DO UPDATE SET type = excluded.type`,
      values,
    );
    expect(await t.db.sql('SELECT type FROM audit_events WHERE seq = 2')).toEqual([{ type: event!.type }]);
  });

  it('refuses a row past a gap: the log grows only at its head', async () => {
    const [head] = await t.db.sql<{ seq: number; hash: string }>('SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1');
    await refused(`INSERT INTO audit_events ${COLUMNS} VALUES (?, ?, 'token.issued', NULL, NULL, NULL, '{}', ?, ?)`, [Number(head!.seq) + 2, new Date().toISOString(), head!.hash, '0'.repeat(64)]);
    expect(await t.db.sql('SELECT seq FROM audit_events WHERE seq > ?', [head!.seq])).toEqual([]);
  });

  it('refuses rows of one insert with a gap between them, as a batch appended in one statement would leave', async () => {
    const [head] = await t.db.sql<{ seq: number; hash: string }>('SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1');
    const at = new Date().toISOString();
    await refused(`INSERT INTO audit_events ${COLUMNS} VALUES (?, ?, 'token.issued', NULL, NULL, NULL, '{}', ?, ?), (?, ?, 'token.issued', NULL, NULL, NULL, '{}', ?, ?)`, [
      Number(head!.seq) + 1, at, head!.hash, '1'.repeat(64),
      Number(head!.seq) + 3, at, '1'.repeat(64), '2'.repeat(64),
    ]);
    expect(await t.db.sql('SELECT seq FROM audit_events WHERE seq > ?', [head!.seq])).toEqual([]);
  });

  it('refuses a row outside the chain, at seq 0 or below', async () => {
    for (const seq of [0, -1]) {
      await refused(`INSERT INTO audit_events ${COLUMNS} VALUES (?, ?, 'token.issued', NULL, NULL, NULL, '{}', ?, ?)`, [seq, new Date().toISOString(), '0'.repeat(64), '0'.repeat(64)]);
    }
    expect(await t.db.sql('SELECT seq FROM audit_events WHERE seq <= 0')).toEqual([]);
  });
});
