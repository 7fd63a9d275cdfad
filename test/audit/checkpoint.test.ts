import { fdatasync } from 'node:fs';
import { promisify } from 'node:util';
import { calculateJwkThumbprint, createLocalJWKSet, decodeProtectedHeader, exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { readCheckpoint } from '../../src/audit/index.js';
import { createJobs } from '../../src/scheduler/index.js';
import { BROKER_ISSUER, bearer, startTestBroker, type TestBroker, type TestBrokerOptions } from '../helpers/broker.js';
import { ENGINE } from '../helpers/engine.js';
import { allEvents } from '../helpers/records.js';
import { until } from '../helpers/process.js';
import { startReceiver } from '../helpers/receiver.js';

let t: TestBroker | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

const HOUR = 3_600_000;
const start = async (options: TestBrokerOptions = {}) => (t = await startTestBroker(options));
const auditor = (t: TestBroker) => t.as.person('ivy', ['auditors']);
const issue = async (t: TestBroker, n = 1) => {
  for (let i = 0; i < n; i += 1) {
    const response = await t.http
      .post('/v1/credentials')
      .set(bearer(await t.as.pipeline()))
      .send({ task_id: `t${i}`, scopes: ['artifacts:read'], audience: 'registry.acme.internal' });
    expect(response.status).toBe(201);
  }
};
const checkpoint = async (t: TestBroker) => {
  const response = await t.http.get('/v1/audit/checkpoint').set(bearer(await auditor(t)));
  expect(response.status).toBe(200);
  return response.body as { seq: number; hash: string; at: string; checkpoint: string };
};
const verify = async (t: TestBroker, jws?: string) =>
  t.http
    .get('/v1/audit/verify')
    .query(jws === undefined ? {} : { checkpoint: jws })
    .set(bearer(await auditor(t)));

/** SQLite's fdatasync of the WAL, held while the test says: what it holds is committed, not yet durable. */
function holdableSync() {
  const held: (() => void)[] = [];
  const sync = promisify(fdatasync);
  const state = {
    holding: false,
    async datasync(fd: number) {
      if (state.holding) await new Promise<void>((resolve) => held.push(resolve));
      await sync(fd);
    },
    hold: () => void (state.holding = true),
    release() {
      state.holding = false;
      for (const resolve of held.splice(0)) resolve();
    },
  };
  return state;
}

/** What an intruder with write access does: drop the guards, delete the newest events. */
const truncate = async (t: TestBroker, fromSeq: number) => {
  await t.db.unguardAuditLog();
  await t.db.sql('DELETE FROM audit_events WHERE seq >= ?', [fromSeq]);
};

describe('GET /v1/audit/checkpoint', () => {
  it('signs the chain head as a checkpoint+jwt anyone can verify against the JWKS, and appends nothing', async () => {
    const t = await start();
    await issue(t, 2);
    const head = await t.broker.store.events.head();
    const body = await checkpoint(t);
    expect(body).toEqual({ seq: head?.seq, hash: head?.hash, at: expect.any(String), checkpoint: expect.any(String) });
    expect(body.at).toBe(new Date(Math.floor(t.clock() / 1000) * 1000).toISOString());

    const jwks = createLocalJWKSet((await t.http.get('/.well-known/jwks.json')).body);
    const { payload, protectedHeader } = await jwtVerify(body.checkpoint, jwks, { issuer: BROKER_ISSUER, typ: 'checkpoint+jwt', currentDate: new Date(t.clock()) });
    expect(protectedHeader).toEqual({ alg: 'ES256', kid: expect.any(String), typ: 'checkpoint+jwt' });
    expect(payload).toEqual({ iss: BROKER_ISSUER, seq: head?.seq, hash: head?.hash, iat: Math.floor(t.clock() / 1000) });

    expect(await t.broker.store.events.head()).toEqual(head); // reading it appended nothing
    expect((await verify(t, body.checkpoint)).body).toEqual({ ok: true, events: head?.seq, head: head?.hash });
  });

  it.runIf(ENGINE === 'sqlite')('never signs a head that is committed but not yet durable: it waits for the sync', async () => {
    // SQLite's reader sees a batch at its COMMIT; the writer's fdatasync of the WAL follows. A
    // head signed in between and lost to a power failure would have the auditor who kept the
    // checkpoint told the chain is truncated, by a broker that did nothing wrong. Waiting costs
    // at most one sync, and the head it then signs covers every event visible when it was asked.
    const sync = holdableSync();
    const t = await start({ datasync: sync.datasync });
    await issue(t);
    const durable = (await t.broker.store.events.head())?.seq ?? 0;

    sync.hold();
    const issuing = t.http
      .post('/v1/credentials')
      .set(bearer(await t.as.pipeline()))
      .send({ task_id: 'held', scopes: ['artifacts:read'], audience: 'registry.acme.internal' })
      .then((response) => response);
    await until(async () => ((await t.broker.store.events.head())?.seq ?? 0) > durable); // committed, its sync held
    const committed = await t.broker.store.events.head();
    const asked = checkpoint(t).then((body) => ({ body, whileHeld: sync.holding }));
    try {
      const early = await Promise.race([asked, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 500))]);
      expect(early?.body).toBeUndefined();
    } finally {
      sync.release(); // else the broker never closes
    }
    const { body, whileHeld } = await asked;
    expect(whileHeld).toBe(false);
    expect(body.seq).toBeGreaterThanOrEqual(committed?.seq ?? Infinity);
    expect((await issuing).status).toBe(201);
    expect((await verify(t, body.checkpoint)).body).toMatchObject({ ok: true });
  });

  it('is for auditors and admins only', async () => {
    const t = await start();
    const denied = await t.http.get('/v1/audit/checkpoint').set(bearer(await t.as.pipeline()));
    expect(denied.status).toBe(403);
    expect(denied.body.type).toBe('urn:jit-broker:problem:policy_denied');
    expect((await t.http.get('/v1/audit/checkpoint').set(bearer(await t.as.person('ada', ['admins'])))).status).toBe(200);
    expect((await t.http.get('/v1/audit/checkpoint?x=1').set(bearer(await auditor(t)))).status).toBe(400);
  });
});

describe('GET /v1/audit/verify?checkpoint=', () => {
  it('holds while the chain grows past the checkpoint', async () => {
    const t = await start();
    const { checkpoint: jws } = await checkpoint(t);
    await issue(t, 3);
    const head = await t.broker.store.events.head();
    expect((await verify(t, jws)).body).toEqual({ ok: true, events: head?.seq, head: head?.hash });
  });

  it('reports a chain whose newest events were deleted behind the broker\'s back as truncated', async () => {
    const t = await start();
    await issue(t, 3);
    const cp = await checkpoint(t);
    await issue(t, 1);
    await truncate(t, cp.seq - 1); // the head the checkpoint names, the event before it, and all after

    // The rest still links up perfectly: without a checkpoint, nothing shows.
    expect((await verify(t)).body).toEqual({ ok: true, events: cp.seq - 2, head: expect.any(String) });
    expect((await verify(t, cp.checkpoint)).body).toEqual({ ok: false, reason: 'truncated' });
  });

  it('reports a chain cut and grown again past the checkpoint as truncated: the event there is another', async () => {
    const t = await start();
    await issue(t, 2);
    const cp = await checkpoint(t);
    await truncate(t, cp.seq - 2);
    await t.restart(); // the broker appends on top of the cut chain, which links up again
    await issue(t, 3);
    expect((await t.broker.store.events.head())?.seq).toBeGreaterThan(cp.seq);
    expect((await verify(t)).body).toMatchObject({ ok: true });
    expect((await verify(t, cp.checkpoint)).body).toEqual({ ok: false, reason: 'truncated' });
  });

  it('still reports an edited event by its seq', async () => {
    const t = await start();
    await issue(t, 2);
    const cp = await checkpoint(t);
    await t.db.unguardAuditLog();
    await t.db.sql(`UPDATE audit_events SET data = replace(data, '"t1"', '"t9"') WHERE type = 'request.created' AND data LIKE '%"t1"%'`);
    const body = (await verify(t, cp.checkpoint)).body;
    expect(body).toEqual({ ok: false, first_bad_seq: expect.any(Number) });
  });

  it('refuses (400) a checkpoint whose signature does not verify, or that is not a checkpoint of this broker', async () => {
    const t = await start();
    const cp = await checkpoint(t);
    const { kid } = decodeProtectedHeader(cp.checkpoint);
    const forger = await generateKeyPair('ES256');
    const forge = (header: Record<string, unknown>, claims: Record<string, unknown>, key = forger.privateKey) =>
      new SignJWT(claims).setProtectedHeader({ alg: 'ES256', ...header }).sign(key);
    const otherKey = await exportJWK(forger.publicKey);
    const token = (await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ task_id: 'x', scopes: ['artifacts:read'], audience: 'y' })).body
      .access_token as string;
    const [head, claims, signature] = cp.checkpoint.split('.') as [string, string, string];
    const shorterClaims = Buffer.from(JSON.stringify({ iss: BROKER_ISSUER, seq: 1, hash: cp.hash, iat: 1 })).toString('base64url');
    const bad = [
      await forge({ kid, typ: 'checkpoint+jwt' }, { iss: BROKER_ISSUER, seq: cp.seq, hash: cp.hash, iat: 1 }), // the broker's kid, another key
      await forge({ kid: await calculateJwkThumbprint(otherKey), typ: 'checkpoint+jwt' }, { iss: BROKER_ISSUER, seq: cp.seq, hash: cp.hash, iat: 1 }),
      `${head}.${shorterClaims}.${signature}`, // the claims edited, the signature kept
      token, // a broker token, not a checkpoint
      `${head}.${claims}.`, // unsigned
      'not-a-checkpoint',
    ];
    for (const jws of bad) {
      const response = await verify(t, jws);
      expect(response.status, jws).toBe(400);
      expect(response.body.type).toBe('urn:jit-broker:problem:invalid_request');
    }
  });

  it('accepts a checkpoint whose key has since been retired from the JWKS', async () => {
    const t = await start({ configure: (c) => Object.assign(c.signing as Record<string, unknown>, { rotateEvery: '10m', publishAhead: '2m' }) });
    const cp = await checkpoint(t);
    const { kid } = decodeProtectedHeader(cp.checkpoint);
    for (let minutes = 9; minutes <= 30; minutes += 3) {
      t.clock.advance(3 * 60_000);
      await t.broker.scheduler.runAll();
    }
    const published = (await t.http.get('/.well-known/jwks.json')).body.keys as { kid: string }[];
    expect(published.map((key) => key.kid)).not.toContain(kid);
    expect((await verify(t, cp.checkpoint)).body).toMatchObject({ ok: true });
  });

  it('holds for a checkpoint whose event committed after the walk it shares read the chain (no false alarm)', async () => {
    // Verifications asked together share one walk of the chain. On PostgreSQL its last page is
    // read while other replicas append: a checkpoint signed just after may name an event that
    // page did not see. Here the page's answer is held, once read, until the second verification
    // (of such a checkpoint) has joined the walk.
    const t = await start();
    await issue(t);
    const { links } = t.broker.store.events;
    const { get } = t.broker.store.keys;
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let walked!: () => void;
    const read = new Promise<void>((resolve) => (walked = resolve));
    let holding = true;
    t.broker.store.events.links = async (afterSeq, limit) => {
      const page = await links(afterSeq, limit);
      if (holding) {
        holding = false;
        walked();
        await released;
      }
      return page;
    };
    try {
      const first = verify(t).then((response) => response);
      await read; // the walk has read the chain as it was
      await issue(t); // the checkpoint's event commits after that read
      const cp = await checkpoint(t);
      let asked!: () => void;
      const keyAsked = new Promise<void>((resolve) => (asked = resolve));
      t.broker.store.keys.get = async (kid) => {
        asked();
        return get(kid);
      };
      const second = verify(t, cp.checkpoint).then((response) => response);
      // Once the second has read its checkpoint's key and verified it, it joins the walk.
      await keyAsked;
      expect(await readCheckpoint(cp.checkpoint, { issuer: BROKER_ISSUER, keys: { get } })).toMatchObject({ seq: cp.seq });
      for (let turn = 0; turn < 10; turn += 1) await new Promise((resolve) => setImmediate(resolve));
      release();
      const alone = (await first).body;
      expect(alone).toMatchObject({ ok: true });
      expect(alone.events).toBeLessThan(cp.seq); // the walk as it read the chain
      expect((await second).body).toEqual({ ok: true, events: cp.seq, head: cp.hash });
    } finally {
      t.broker.store.events.links = links;
      t.broker.store.keys.get = get;
    }
  });
});

/**
 * On PostgreSQL, runs `work` while another session holds the chain's lock, until `waiters`
 * transactions wait on a lock: every one of them has judged before any can append, so a check
 * made outside a lock of its own would let them all through. SQLite serialises writes anyway.
 */
async function whileChainLocked<T>(t: TestBroker, waiters: number, work: () => Promise<T>): Promise<T> {
  if (ENGINE !== 'postgres') return work();
  const holder = new pg.Client({ connectionString: t.db.url });
  await holder.connect();
  try {
    await holder.query('SELECT pg_advisory_lock(7596286014052352340)'); // the lock append_audit_events takes
    const running = work();
    for (;;) {
      const [row] = (await holder.query(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`)).rows;
      if (row.n >= waiters) break;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await holder.query('SELECT pg_advisory_unlock(7596286014052352340)');
    return await running;
  } finally {
    await holder.end();
  }
}

describe('the checkpoint job', () => {
  it('signs the head every checkpointEvery, records it and sends it to webhooks; nothing new, nothing signed', async () => {
    const receiver = await startReceiver();
    try {
      const t = await start({ configure: (c) => (c.notify = { webhooks: [{ url: receiver.url('/hook'), events: ['audit.checkpoint'] }] }) });
      const checkpoints = async () => (await allEvents(t)).filter((event) => event.type === 'audit.checkpoint');

      const head = await t.broker.store.events.head();
      await t.broker.scheduler.runAll(); // catches up at start: no checkpoint yet
      const [first, ...none] = await checkpoints();
      expect(none).toEqual([]);
      expect(first?.data).toEqual({ seq: head?.seq, hash: head?.hash, kid: expect.any(String), checkpoint: expect.any(String) });
      expect((await verify(t, first?.data.checkpoint as string)).body).toMatchObject({ ok: true });

      await t.broker.notifier.idle();
      expect(receiver.deliveries.map((d) => d.body)).toEqual([
        { event: 'audit.checkpoint', at: expect.any(String), seq: head?.seq, hash: head?.hash, checkpoint: first?.data.checkpoint },
      ]);

      await issue(t);
      t.clock.advance(HOUR - 1_000);
      await t.broker.scheduler.runAll();
      expect(await checkpoints()).toHaveLength(1); // not due yet

      t.clock.advance(1_000);
      await Promise.all([t.broker.scheduler.runAll(), t.broker.scheduler.runAll()]);
      expect(await checkpoints()).toHaveLength(2); // due: one, however many runs at once

      t.clock.advance(3 * HOUR);
      await t.broker.scheduler.runAll();
      expect(await checkpoints()).toHaveLength(2); // nothing appended since but the checkpoint itself
      await t.broker.notifier.idle();
      expect(receiver.deliveries).toHaveLength(2);
    } finally {
      await receiver.close();
    }
  });

  it('signs one every checkpointEvery when scheduler.interval is that long: the tick a period after the last one signs', async () => {
    const t = await start({
      configure: (c) => {
        c.scheduler = { interval: '60m' };
        c.audit = { checkpointEvery: '1h' };
      },
    });
    const checkpoints = async () => (await allEvents(t)).filter((event) => event.type === 'audit.checkpoint');
    await t.broker.scheduler.runAll();
    expect(await checkpoints()).toHaveLength(1);
    await issue(t);
    // The next tick comes an interval after the last one; the checkpoint of that run was recorded
    // a moment after its tick (its reads, its signature, its commit), so a little less than a
    // period has passed since it.
    t.clock.advance(HOUR - 50);
    await t.broker.scheduler.runAll();
    expect(await checkpoints()).toHaveLength(2);
  });

  it('keeps signing after the clock is stepped back past the last checkpoint', async () => {
    const t = await start();
    const checkpoints = async () => (await allEvents(t)).filter((event) => event.type === 'audit.checkpoint');
    // A clock a day ahead signs one (this process's before NTP stepped it back, or another replica's).
    t.clock.advance(24 * HOUR);
    await t.broker.scheduler.runAll();
    expect(await checkpoints()).toHaveLength(1);
    t.clock.advance(-24 * HOUR);
    await issue(t);
    t.clock.advance(HOUR);
    await t.broker.scheduler.runAll();
    expect(await checkpoints()).toHaveLength(2);
  });

  it.runIf(ENGINE === 'sqlite')('signs a head another process on the file committed only once it is durable', async () => {
    // Workers share one SQLite file (`listen.workers`): one reads another's batch between its
    // COMMIT and its sync. Its checkpoint event is readable (GET /v1/audit/events) from its own
    // COMMIT, before its sync: the JWS it carries must name a head that is durable already.
    const first = holdableSync();
    const second = holdableSync();
    const t = await start({ datasync: first.datasync });
    const worker = await startTestBroker({ db: t.db, dir: t.dir, issuers: t.issuers, clock: t.clock, datasync: second.datasync });
    try {
      const { store, keyring, notifier } = worker.broker;
      const signCheckpoint = createJobs({ store, keyring, notifier, clock: t.clock, issuer: BROKER_ISSUER, checkpointEvery: () => HOUR })['sign-checkpoint'];
      const durable = (await store.events.head())?.seq ?? 0;
      first.hold();
      second.hold();
      const issuing = issue(t);
      await until(async () => ((await store.events.head())?.seq ?? 0) > durable); // the first's batch, committed, its sync held
      const committed = await store.events.head();
      const signing = Promise.resolve(signCheckpoint?.());
      try {
        await new Promise((resolve) => setTimeout(resolve, 500));
        expect(await store.events.latest('audit.checkpoint')).toBeUndefined();
      } finally {
        first.release();
        second.release();
      }
      expect(await signing).toBe(1);
      await issuing;
      const recorded = await store.events.latest('audit.checkpoint');
      expect(recorded?.data.seq).toBeGreaterThanOrEqual(committed?.seq ?? Infinity);
    } finally {
      await worker.close();
    }
  });

  it('appends once when two processes decide at the same moment (the store judges under its lock)', async () => {
    const t = await start();
    const store = t.broker.store;
    const latest = (await store.events.latest('audit.checkpoint'))?.seq ?? 0;
    const entry = { type: 'audit.checkpoint' as const, data: { seq: 1, hash: 'x' } };
    const attempts = await whileChainLocked(t, 8, () => Promise.all(Array.from({ length: 8 }, () => store.appendIfLatest(entry, latest))));
    const appended = attempts.filter((event) => event !== undefined);
    expect(appended).toHaveLength(1);
    expect((await store.events.latest('audit.checkpoint'))?.seq).toBe(appended[0]?.seq);
    expect(await store.appendIfLatest(entry, latest)).toBeUndefined();
    expect(await store.appendIfLatest(entry, appended[0]?.seq as number)).toMatchObject({ type: 'audit.checkpoint' });
  });
});
