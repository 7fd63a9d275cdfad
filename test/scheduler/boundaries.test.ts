import { afterEach, describe, expect, it } from 'vitest';
import { createJobs } from '../../src/scheduler/jobs.js';
import { verifyChain } from '../../src/audit/index.js';
import type { Store } from '../../src/store/index.js';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { allEvents } from '../helpers/records.js';

/**
 * CONTRACT section 6 at the edges of time: a grant ends exactly at its `exp` for the scheduler,
 * introspection and every view alike; a revocation racing the sweep ends in one status and one
 * event; a broker down for days catches up in bounded batches, one event per change.
 */

const body = { task_id: 'build-1', scopes: ['artifacts:read'], audience: 'registry.acme.internal' };
let t: TestBroker;
afterEach(async () => {
  await t?.close();
});
const statusOf = async (id: string) => (await t.db.sql<{ status: string }>('SELECT status FROM requests WHERE id = ?', [id]))[0]?.status;
const eventsFor = async (id: string) => (await allEvents(t)).filter((e) => e.requestId === id).map((e) => e.type);
const introspect = async (token: string) =>
  (await t.http.post('/oauth2/introspect').set(bearer(await t.as.pipeline({}, 'resource-server:x'))).type('form').send({ token })).body;

describe('a grant at its end', () => {
  it('is live 1 ms before exp and expired exactly at it, for the scheduler, introspection and views alike', async () => {
    t = await startTestBroker();
    const g = (await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ ...body, ttl_seconds: 60 })).body;
    const exp = Date.parse(g.expires_at);
    t.clock.set(exp - 1);
    await t.broker.scheduler.runAll();
    expect(await statusOf(g.request_id)).toBe('issued');
    expect((await introspect(g.access_token)).active).toBe(true);
    t.clock.set(exp);
    expect((await introspect(g.access_token)).active).toBe(false);
    const view = await t.http.get(`/v1/credentials/${g.request_id}`).set(bearer(await t.as.pipeline()));
    expect(view.body.status).toBe('expired');
    await t.broker.scheduler.runAll();
    await t.broker.scheduler.runAll();
    expect(await statusOf(g.request_id)).toBe('expired');
    expect((await eventsFor(g.request_id)).filter((x) => x === 'grant.expired')).toHaveLength(1);
  });

  it('cannot be revoked or completed at exp (409; RFC 7009 answers 200), and expires with one event', async () => {
    t = await startTestBroker();
    const g = (await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ ...body, ttl_seconds: 60 })).body;
    t.clock.set(Date.parse(g.expires_at));
    const revoke = await t.http.post(`/v1/credentials/${g.request_id}/revoke`).set(bearer(await t.as.pipeline())).send({ reason: 'done' });
    expect(revoke.status).toBe(409);
    const complete = await t.http.post(`/v1/credentials/${g.request_id}/complete`).set(bearer(await t.as.pipeline()));
    expect(complete.status).toBe(409);
    const holder = await t.http.post('/oauth2/revoke').set(bearer(await t.as.pipeline())).type('form').send({ token: g.access_token });
    expect(holder.status).toBe(200);
    await t.broker.scheduler.runAll();
    expect(await eventsFor(g.request_id)).toEqual(['request.created', 'token.issued', 'grant.expired']);
  });

  it('ends with one status and one event when a revocation races the sweep at exp', async () => {
    t = await startTestBroker();
    const g = (await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ ...body, ttl_seconds: 60 })).body;
    const exp = Date.parse(g.expires_at);
    t.clock.set(exp - 1);
    const token = await t.as.pipeline();
    const revoking = t.http.post(`/v1/credentials/${g.request_id}/revoke`).set(bearer(token)).send({ reason: 'done' }).then((r) => r);
    const sweeping = (async () => {
      await new Promise((r) => setImmediate(r));
      t.clock.set(exp);
      await t.broker.scheduler.runAll();
    })();
    const [r] = await Promise.all([revoking, sweeping]);
    await t.broker.scheduler.runAll();
    const evs = (await eventsFor(g.request_id)).filter((x) => x === 'grant.expired' || x === 'token.revoked');
    expect(evs).toHaveLength(1);
    expect(evs[0] === 'token.revoked' ? 'revoked' : 'expired').toBe(await statusOf(g.request_id));
    expect(r.status === 200).toBe(evs[0] === 'token.revoked');
  });

  it('of an approved request is not collected at its deadline, and expires once', async () => {
    t = await startTestBroker();
    const p = (await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send({ ...body, scopes: ['model:deploy'] })).body;
    const approve = await t.http.post(`/v1/credentials/${p.request_id}/approvals`).set(bearer(await t.as.person('alice', ['approvers', 'ml-release']))).send({ decision: 'approve', reason: 'ok', digest: p.digest });
    const deadline = Date.parse(approve.body.expires_at);
    t.clock.set(deadline);
    const collect = await t.http.post(`/v1/credentials/${p.request_id}/token`).set(bearer(await t.as.ml()));
    expect(collect.status).toBe(409);
    await t.broker.scheduler.runAll();
    await t.broker.scheduler.runAll();
    const evs = await eventsFor(p.request_id);
    expect(evs.filter((x) => x === 'request.expired')).toHaveLength(1);
    const expired = (await allEvents(t)).find((e) => e.type === 'request.expired' && e.requestId === p.request_id);
    expect(expired?.data).toMatchObject({ previous_status: 'approved' });
  });
});

describe('catching up after days down, in small batches', () => {
  it('expires every pending and issued request and flags every overdue review, each exactly once', async () => {
    t = await startTestBroker();
    const pipeline = await t.as.pipeline();
    const issued: string[] = [];
    for (let i = 0; i < 7; i += 1) issued.push((await t.http.post('/v1/credentials').set(bearer(pipeline)).send({ ...body, task_id: `g${i}` })).body.request_id);
    const pending: string[] = [];
    for (let i = 0; i < 4; i += 1) pending.push((await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send({ ...body, task_id: `p${i}`, scopes: ['model:deploy'] })).body.request_id);
    const bg: string[] = [];
    for (let i = 0; i < 3; i += 1) {
      const r = await t.http.post('/v1/credentials').set(bearer(await t.as.person(`oncall${i}`, ['on-call']))).send({ ...body, scopes: ['logs:read'], break_glass: true, justification: 'production is down, need the logs now' });
      expect(r.status).toBe(201);
      bg.push(r.body.request_id);
    }
    await t.broker.close();
    t.clock.advance(3 * 86_400_000);
    await t.restart();
    // The broker's own store, each sweep's answer noted on its way back: how many records each
    // store operation moved.
    const { sweep } = t.broker.store;
    const batches = { grants: [] as number[], requests: [] as number[], overdueReviews: [] as number[] };
    const noted = async <T extends unknown[]>(name: keyof typeof batches, moved: Promise<T>): Promise<T> => {
      const records = await moved;
      batches[name].push(records.length);
      return records;
    };
    const store: Store = {
      ...t.broker.store,
      sweep: {
        ...sweep,
        grants: (...args) => noted('grants', sweep.grants(...args)),
        requests: (...args) => noted('requests', sweep.requests(...args)),
        overdueReviews: (...args) => noted('overdueReviews', sweep.overdueReviews(...args)),
      },
    };
    const jobs = createJobs({
      store,
      keyring: t.broker.keyring,
      notifier: t.broker.notifier,
      clock: t.clock,
      issuer: 'http://broker.test',
      checkpointEvery: () => 3600_000,
      batchSize: 2,
    });
    // Batches of two, one store operation each, until one comes back short: ten grants (seven
    // and three break-glass), four pending requests, three overdue reviews.
    expect(await jobs['expire-grants']!()).toBe(10);
    expect(await jobs['expire-requests']!()).toBe(4);
    expect(await jobs['flag-overdue-reviews']!()).toBe(3);
    expect(batches).toEqual({ grants: [2, 2, 2, 2, 2, 0], requests: [2, 2, 0], overdueReviews: [2, 1] });
    await t.broker.scheduler.runAll();
    const events = await allEvents(t);
    for (const id of [...issued, ...bg]) {
      expect(events.filter((e) => e.requestId === id && e.type === 'grant.expired'), id).toHaveLength(1);
      expect(await statusOf(id)).toBe('expired');
    }
    for (const id of pending) {
      expect(events.filter((e) => e.requestId === id && e.type === 'request.expired')).toHaveLength(1);
      expect(await statusOf(id)).toBe('expired');
    }
    for (const id of bg) expect(events.filter((e) => e.requestId === id && e.type === 'breakglass.review_overdue')).toHaveLength(1);
    expect(verifyChain(events).ok).toBe(true);
  });

  it('ends after the batch in hand once the broker stops, and the next run goes on from there', async () => {
    t = await startTestBroker();
    for (let i = 0; i < 7; i += 1) await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ ...body, task_id: `g${i}` });
    for (let i = 0; i < 4; i += 1) await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send({ ...body, task_id: `p${i}`, scopes: ['model:deploy'] });
    t.clock.advance(3 * 86_400_000);
    const jobs = createJobs({ store: t.broker.store, keyring: t.broker.keyring, notifier: t.broker.notifier, clock: t.clock, issuer: 'http://broker.test', checkpointEvery: () => 3600_000, batchSize: 2 });
    // Told to stop once its first batch is under way: that batch is finished and recorded, no other begun.
    const runUntilStopped = async (name: string) => {
      const stopping = new AbortController();
      const run = jobs[name]!(stopping.signal);
      stopping.abort();
      return run;
    };
    expect(await runUntilStopped('expire-grants')).toBe(2);
    expect(await runUntilStopped('expire-requests')).toBe(2);
    expect((await allEvents(t)).filter((e) => e.type === 'grant.expired' || e.type === 'request.expired')).toHaveLength(4);
    expect(await jobs['expire-grants']!()).toBe(5);
    expect(await jobs['expire-requests']!()).toBe(2);
  });
});
