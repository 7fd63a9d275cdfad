import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyStoredChain } from '../../src/audit/index.js';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { ENGINE } from '../helpers/engine.js';

/**
 * CONTRACT section 5 on PostgreSQL: a deadlock or a serialization failure is PostgreSQL undoing
 * one side of a conflict between transactions (between replicas), never the caller's fault. The
 * store runs the transaction again, a bounded number of times, and counts what happened in the
 * metrics; the chain keeps no trace of the try that was undone. The conflicts are injected by a
 * trigger raising the SQLSTATE PostgreSQL raises, as many times as a test says. And one
 * operation that fails in a batch fails alone: the others of its batch are recorded.
 */

let t: TestBroker;
beforeAll(async () => {
  t = await startTestBroker({
    configure: (config) => void Object.assign(config, { limits: { requestsPerMinute: 100_000, liveGrants: 100_000 } }),
  });
});
afterAll(async () => {
  await t?.close();
});

const body = { task_id: 'build-42', scopes: ['artifacts:read'], audience: 'registry.acme.internal' };
const issue = async (payload: Record<string, unknown> = body, token?: string) =>
  t.http.post('/v1/credentials').set(bearer(token ?? (await t.as.pipeline()))).send(payload);

/** The value of one series of /metrics. */
const metric = async (series: string) => {
  const text = (await t.http.get('/metrics')).text;
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
};

/** Makes the next `times` inserts into issuances fail with `sqlstate`, as PostgreSQL would; returns the undo. */
async function failIssuances(sqlstate: string, times: number): Promise<() => Promise<void>> {
  // A sequence, not a table: its value survives the rollback of the transaction that raised.
  await t.db.sql('CREATE SEQUENCE injected_conflicts');
  await t.db.sql(`CREATE FUNCTION injected_conflict() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF nextval('injected_conflicts') <= ${times} THEN
        RAISE EXCEPTION 'injected conflict' USING ERRCODE = '${sqlstate}';
      END IF;
      RETURN NEW;
    END $$`);
  await t.db.sql('CREATE TRIGGER injected_conflict BEFORE INSERT ON issuances FOR EACH ROW EXECUTE FUNCTION injected_conflict()');
  return async () => {
    await t.db.sql('DROP TRIGGER injected_conflict ON issuances');
    await t.db.sql('DROP FUNCTION injected_conflict()');
    await t.db.sql('DROP SEQUENCE injected_conflicts');
  };
}

/** The chain verifies, seq 1, 2, 3, ... without a gap. */
async function chainIntact(): Promise<void> {
  const verdict = await verifyStoredChain(t.broker.store.events);
  expect(verdict).toMatchObject({ ok: true });
  expect(verdict.ok && verdict.events).toBe((await t.broker.store.events.head())?.seq);
}

const requestsOfTask = async (taskId: string) => Number((await t.db.sql<{ n: number }>('SELECT count(*) AS n FROM requests WHERE task_id = ?', [taskId]))[0]?.n);

describe.runIf(ENGINE === 'postgres')('conflicts PostgreSQL reports', () => {
  it.each([
    ['40P01', 'deadlock'],
    ['40001', 'serialization_failure'],
  ])('%s (%s) once: the issuance is run again and answered 201, recorded once, and counted', async (sqlstate, kind) => {
    const conflicts = (await metric(`broker_store_conflicts_total{kind="${kind}"}`)) ?? Number.NaN;
    const retries = (await metric('broker_store_retries_total')) ?? Number.NaN;
    const undo = await failIssuances(sqlstate, 1);
    const task = `retried-${kind}`;
    try {
      const response = await issue({ ...body, task_id: task });
      expect(response.status).toBe(201);
      const { jti } = decodeJwt(response.body.access_token as string);
      expect(await t.db.sql('SELECT jti FROM issuances WHERE jti = ?', [jti])).toHaveLength(1);
      expect(await requestsOfTask(task)).toBe(1);
    } finally {
      await undo();
    }
    expect(await metric(`broker_store_conflicts_total{kind="${kind}"}`)).toBe(conflicts + 1);
    expect(await metric('broker_store_retries_total')).toBe(retries + 1);
    await chainIntact();
  });

  it('again and again: after three tries, 503 and nothing recorded; each try counted', async () => {
    const conflicts = (await metric('broker_store_conflicts_total{kind="deadlock"}')) ?? Number.NaN;
    const retries = (await metric('broker_store_retries_total')) ?? Number.NaN;
    const undo = await failIssuances('40P01', 3);
    try {
      const response = await issue({ ...body, task_id: 'never' });
      expect(response.status).toBe(503);
      expect(response.body.type).toMatch(/unavailable$/);
      expect(await requestsOfTask('never')).toBe(0);
    } finally {
      await undo();
    }
    expect(await metric('broker_store_conflicts_total{kind="deadlock"}')).toBe(conflicts + 3);
    expect(await metric('broker_store_retries_total')).toBe(retries + 2);
    await chainIntact();
    expect((await issue()).status).toBe(201);
  });
});

describe('one operation of a batch that fails', () => {
  it('fails alone: requests sent at once with it are recorded, its own writes are not', async () => {
    // Any write of the doomed request fails, as a full disk would; the others are untouched.
    const undo = await t.db.failWrites('requests', 'INSERT', "NEW.task_id = 'doomed'");
    const tokens = await Promise.all(
      Array.from({ length: 12 }, (_, i) => t.as.pipeline({ actor: `batch-${i}` }, `repo:acme/app:ref:refs/heads/batch-${i}`)),
    );
    let answers;
    try {
      // At once, so they queue behind one another into the same batches.
      answers = await Promise.all(tokens.map((token, i) => issue({ ...body, task_id: i === 5 ? 'doomed' : `batch-${i}` }, token)));
    } finally {
      await undo();
    }
    expect(answers.map((a) => a.status)).toEqual(tokens.map((_, i) => (i === 5 ? 503 : 201)));
    expect(await requestsOfTask('doomed')).toBe(0);
    const events = await t.broker.store.events.after(0, 1_000_000);
    for (const [i, answer] of answers.entries()) {
      if (i === 5) continue;
      expect(events.filter((e) => e.requestId === answer.body.request_id).map((e) => e.type)).toEqual(['request.created', 'token.issued']);
    }
    // The doomed request's rate count went with its writes: one count per identity, never two.
    const counted = await t.db.sql<{ counts: string }>('SELECT counts FROM caller_rates WHERE holder LIKE ?', ['identity:%refs/heads/batch-5']);
    expect(counted).toHaveLength(0);
    await chainIntact();
  });
});
