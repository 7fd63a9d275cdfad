import { afterEach, describe, expect, it } from 'vitest';
import { REFUSALS_RECORDED_PER_MINUTE } from '../../src/credentials/admission.js';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { allEvents } from '../helpers/records.js';

/** CONTRACT section 2 `limits`, and section 5's bounded refusal records. */

let t: TestBroker;
afterEach(async () => {
  await t.close();
});

const MINUTE = 60_000;
const read = { task_id: 'build', scopes: ['artifacts:read'], audience: 'registry.acme.internal' };
const migrate = { task_id: 'migrate', scopes: ['db:admin'], audience: 'db.acme.internal' };
const post = async (token: string, payload: Record<string, unknown> = read) => t.http.post('/v1/credentials').set(bearer(token)).send(payload);
const start = (limits: Record<string, number>) =>
  startTestBroker({
    configure(config) {
      config.limits = limits;
      (config.policies as unknown[]).push({ id: 'people-read', match: { issuer: 'sso', claims: { groups: 'builders' } }, scopes: ['artifacts:read'] });
    },
  });
/** The start of the next whole minute on the broker's clock (never back in time: its key must already sign). */
/** The next clock minute, at least 2 s ahead: a test may step back a second from it, never to before the broker's first key. */
const nextMinute = () => Math.ceil((t.clock() + 2_000) / MINUTE) * MINUTE;
const dbJob = (actor = 'pat') => t.as.pipeline({ repository: 'acme/db', actor }, 'repo:acme/db:ref:refs/heads/main');
const expect429 = (response: { status: number; body: { type?: string; detail?: string }; headers: Record<string, string> }, why: RegExp) => {
  expect(response.status).toBe(429);
  expect(response.body.type).toMatch(/rate_limited$/);
  expect(response.body.detail).toMatch(why);
  expect(Number(response.headers['retry-after'])).toBeGreaterThan(0);
};

describe('requestsPerMinute', () => {
  it('refuses past the limit in 60 seconds with 429 and Retry-After, counting refusals too, then recovers', async () => {
    t = await start({ requestsPerMinute: 4 });
    const minute = nextMinute();
    t.clock.set(minute + 15_000);
    const job = await t.as.pipeline();
    for (let i = 0; i < 3; i += 1) expect((await post(job)).status).toBe(201);
    expect((await post(job, { ...read, scopes: ['db:admin'] })).status).toBe(403); // refused, and counted
    const over = await post(job);
    expect429(over, /at most 4 in any 60 seconds per identity/);
    // Until those four are more than a minute old, whatever the fraction of their second.
    expect(over.headers['retry-after']).toBe('61');
    t.clock.set(minute + 15_000 + MINUTE);
    expect429(await post(await t.as.pipeline()), /per identity/);
    t.clock.set(minute + 15_000 + MINUTE + 1_000);
    expect((await post(await t.as.pipeline())).status).toBe(201);
  });

  it('holds over any 60 seconds, not per clock minute: a burst at the end of one minute and the start of the next is one burst', async () => {
    t = await start({ requestsPerMinute: 4 });
    const minute = nextMinute();
    t.clock.set(minute - 1_000); // 12:00:59
    const job = await t.as.pipeline();
    for (let i = 0; i < 4; i += 1) expect((await post(job)).status).toBe(201);
    t.clock.set(minute); // 12:01:00: a clock-minute window would start afresh here
    const over = await post(await t.as.pipeline());
    expect429(over, /per identity/);
    expect(over.headers['retry-after']).toBe('60'); // the four leave the window at 12:02:00
    t.clock.set(minute + 30_000);
    expect429(await post(await t.as.pipeline()), /per identity/);
    t.clock.set(minute + 60_000);
    expect((await post(await t.as.pipeline())).status).toBe(201);
  });

  it('never admits more than the limit within 60 seconds, wherever in their seconds the requests fall', async () => {
    t = await start({ requestsPerMinute: 3 });
    const minute = nextMinute();
    t.clock.set(minute + 999); // 12:01:00.999
    const job = await t.as.pipeline();
    for (let i = 0; i < 3; i += 1) expect((await post(job)).status).toBe(201);
    t.clock.set(minute + 60_000); // 12:02:00.000, 59.001 s later: still within a minute of those three
    await t.broker.scheduler.runAll(); // whose counts the sweep keeps
    const over = await post(await t.as.pipeline());
    expect429(over, /at most 3 in any 60 seconds per identity/);
    expect(over.headers['retry-after']).toBe('1');
    t.clock.set(minute + 61_000); // 60.001 s later
    expect((await post(await t.as.pipeline())).status).toBe(201);
  });

  it('spreads requests across the window: it admits as many as leave it, second by second', async () => {
    t = await start({ requestsPerMinute: 3 });
    const minute = nextMinute();
    const job = async () => t.as.pipeline();
    for (const at of [0, 20_000, 40_000]) {
      t.clock.set(minute + at);
      expect((await post(await job())).status).toBe(201);
    }
    t.clock.set(minute + 61_000); // the first has left
    expect((await post(await job())).status).toBe(201);
    t.clock.set(minute + 81_000); // and the second
    expect((await post(await job())).status).toBe(201);
    t.clock.set(minute + 100_999); // the third (at 40 s) is still in
    expect429(await post(await job()), /per identity/);
  });

  it('says in Retry-After when a retry passes: the refused request counts too, so a caller that waits as told is admitted', async () => {
    t = await start({ requestsPerMinute: 2 });
    const minute = nextMinute();
    for (const at of [0, 10_000]) {
      t.clock.set(minute + at);
      expect((await post(await t.as.pipeline())).status).toBe(201);
    }
    t.clock.set(minute + 20_000);
    const over = await post(await t.as.pipeline());
    expect429(over, /per identity/);
    // The requests of 0 s and 10 s must leave, as this refused one of 20 s stays: 71 s.
    expect(over.headers['retry-after']).toBe('51');
    t.clock.advance(51_000);
    expect((await post(await t.as.pipeline())).status).toBe(201);
  });

  it('says in Retry-After when every window lets a retry through: the person\'s may clear after the identity\'s', async () => {
    t = await start({ requestsPerMinute: 2 });
    const minute = nextMinute();
    const login = () => t.as.person('bob', ['builders']);
    for (const at of [0, 1_000]) {
      t.clock.set(minute + at);
      expect((await post(await login())).status).toBe(201);
    }
    t.clock.set(minute + 50_000);
    expect429(await post(await t.as.pipeline({ actor: 'bob' })), /per person/); // counted for bob too
    t.clock.set(minute + 55_000);
    const over = await post(await login());
    expect429(over, /per identity/);
    // The login's own window clears at 62 s; bob's holds the job's refusal of 50 s until 111 s.
    expect(over.headers['retry-after']).toBe('56');
    t.clock.advance(56_000);
    expect((await post(await login())).status).toBe(201);
  });

  it('counts per person: a second identity of the same person shares the minute', async () => {
    t = await start({ requestsPerMinute: 3 });
    for (let i = 0; i < 3; i += 1) expect((await post(await t.as.pipeline({ actor: 'bob' }))).status).toBe(201);
    expect429(await post(await t.as.person('bob', ['builders'])), /per person/);
    expect((await post(await t.as.person('carol', ['builders']))).status).toBe(201);
  });

  it('answers 429 slow_down on the token endpoint', async () => {
    t = await start({ requestsPerMinute: 1 });
    const exchange = async () =>
      t.http.post('/oauth2/token').type('form').send({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: await t.as.pipeline(),
        subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
        scope: 'artifacts:read',
        audience: 'registry.acme.internal',
        task_id: 'build',
      });
    expect((await exchange()).status).toBe(200);
    const refused = await exchange();
    expect(refused.status).toBe(429);
    expect(refused.body.error).toBe('slow_down');
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
  });
});

describe('liveGrants', () => {
  it('refuses a grant past the limit until one ends: completed, revoked or expired', async () => {
    t = await start({ liveGrants: 3 });
    const job = await t.as.pipeline();
    const ids: string[] = [];
    for (let i = 0; i < 3; i += 1) ids.push((await post(job, { ...read, ttl_seconds: 600 - i * 60 })).body.request_id);
    const over = await post(job);
    expect429(over, /at most 3 held at once per identity/);
    expect(Number(over.headers['retry-after'])).toBe(480); // the soonest grant ends in 8 minutes

    expect((await t.http.post(`/v1/credentials/${ids[0]}/complete`).set(bearer(job))).status).toBe(200);
    expect((await post(job)).status).toBe(201);
    expect429(await post(job), /live grants/);

    // Two expire (at 8 and 9 minutes): held no longer, though the scheduler has not marked them yet.
    t.clock.advance(9 * MINUTE);
    const fresh = await t.as.pipeline();
    for (let i = 0; i < 2; i += 1) expect((await post(fresh, { ...read, ttl_seconds: 60 })).status).toBe(201);
    const again = await post(fresh);
    expect429(again, /live grants/);
    expect(Number(again.headers['retry-after'])).toBe(60); // the one just issued ends first
    await t.broker.scheduler.runAll(); // marking it changes no count
    expect429(await post(fresh), /live grants/);
  });

  it('never turns a request the rules refuse into a 429: waiting for a grant to end would not admit it', async () => {
    t = await start({ liveGrants: 1 });
    const job = await t.as.pipeline();
    expect((await post(job)).status).toBe(201);
    expect429(await post(job), /live grants/);
    const denied = await post(job, { ...read, scopes: ['db:admin'] });
    expect(denied.status).toBe(403);
    expect(denied.body.type).toMatch(/policy_denied$/);
    expect(denied.headers['retry-after']).toBeUndefined();
  });

  it('holds a person\'s pending requests no longer once they time out, marked or not', async () => {
    t = await start({ pendingRequests: 1 });
    const pending = await post(await dbJob('bob'), migrate);
    expect(pending.status).toBe(202);
    expect429(await post(await dbJob('bob'), { ...migrate, task_id: 'second' }), /awaiting approval/);
    t.clock.advance(t.config.approval.timeout + 1_000);
    expect((await post(await dbJob('bob'), { ...migrate, task_id: 'third' })).status).toBe(202);
  });

  it('counts per person, across the person\'s identities', async () => {
    t = await start({ liveGrants: 2 });
    expect((await post(await t.as.pipeline({ actor: 'bob' }))).status).toBe(201);
    expect((await post(await t.as.person('bob', ['builders']))).status).toBe(201);
    expect429(await post(await t.as.pipeline({ actor: 'BOB' })), /per person/);
    expect((await post(await t.as.pipeline({ actor: 'carol' }))).status).toBe(201);
  });

  it('holds under concurrent requests', async () => {
    t = await start({ liveGrants: 3 });
    const job = await t.as.pipeline();
    const responses = await Promise.all(Array.from({ length: 12 }, () => post(job)));
    expect(responses.filter((r) => r.status === 201)).toHaveLength(3);
    expect(responses.filter((r) => r.status === 429)).toHaveLength(9);
  });
});

describe('pendingRequests', () => {
  it('refuses a request that would wait past the limit, not one issued at once, and recovers when one is decided', async () => {
    t = await start({ pendingRequests: 2 });
    const job = await dbJob();
    const first = (await post(job, migrate)).body;
    await post(job, { ...migrate, task_id: 'migrate-2' });
    expect429(await post(job, { ...migrate, task_id: 'migrate-3' }), /awaiting approval/);
    const read = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline({ repository: 'acme/db' }, 'repo:acme/db:ref:refs/heads/main'))).send({ task_id: 'b', scopes: ['artifacts:read'], audience: 'x' });
    expect(read.status).toBe(201);
    const deny = await t.http
      .post(`/v1/credentials/${first.request_id}/approvals`)
      .set(bearer(await t.as.person('alice', ['approvers'])))
      .send({ decision: 'deny', reason: 'not today', digest: first.digest });
    expect(deny.body.status).toBe('denied');
    expect((await post(job, { ...migrate, task_id: 'migrate-3' })).status).toBe(202);
  });
});

describe('pendingRequests, Retry-After', () => {
  it('names when the soonest request awaiting approval times out, not when a grant issued at once ends: that frees no place', async () => {
    t = await start({ pendingRequests: 1 });
    const job = await dbJob();
    const issued = await post(job, { ...read, ttl_seconds: 60 });
    expect(issued.status).toBe(201);
    expect((await post(job, migrate)).status).toBe(202);
    t.clock.advance(10_000);
    const over = await post(job, { ...migrate, task_id: 'migrate-2' });
    expect429(over, /awaiting approval/);
    expect(Number(over.headers['retry-after'])).toBe(t.config.approval.timeout / 1000 - 10);
  });
});

describe('refusal records', () => {
  it('records a few refusals a minute one by one, counts the rest into one event, and the counts add up', async () => {
    t = await start({ requestsPerMinute: 1_000 });
    const minute = nextMinute();
    t.clock.set(minute);
    const job = await t.as.pipeline();
    const refusals = 40;
    for (let i = 0; i < refusals; i += 1) expect((await post(job, { ...read, scopes: ['db:admin'] })).status).toBe(403);
    const refused = async () => (await allEvents(t)).filter((e) => e.type === 'request.refused');
    expect(await refused()).toHaveLength(REFUSALS_RECORDED_PER_MINUTE);

    await t.broker.scheduler.runAll(); // the minute is not over: nothing to report yet
    expect(await refused()).toHaveLength(REFUSALS_RECORDED_PER_MINUTE);
    t.clock.advance(MINUTE);
    await t.broker.scheduler.runAll(); // over here, not yet for a replica whose clock is a little behind
    expect(await refused()).toHaveLength(REFUSALS_RECORDED_PER_MINUTE);
    t.clock.advance(MINUTE);
    await t.broker.scheduler.runAll();
    await t.broker.scheduler.runAll(); // and reported once
    const events = await refused();
    expect(events).toHaveLength(REFUSALS_RECORDED_PER_MINUTE + 1);
    const aggregated = events.at(-1);
    expect(aggregated).toMatchObject({ actor: { sub: 'repo:acme/app:ref:refs/heads/main' }, data: { aggregated: true, minute: new Date(minute).toISOString() } });
    expect(events.reduce((sum, e) => sum + Number(e.data.count), 0)).toBe(refusals);
  });

  it('caps each identity by its own count in its own minute: another caller, or the next minute, is recorded one by one again', async () => {
    t = await start({ requestsPerMinute: 1_000 });
    const minute = nextMinute();
    t.clock.set(minute);
    const refuse = async (token: string) => expect((await post(token, { ...read, scopes: ['db:admin'] })).status).toBe(403);
    const noisy = await t.as.pipeline();
    for (let i = 0; i < REFUSALS_RECORDED_PER_MINUTE + 3; i += 1) await refuse(noisy);
    const recorded = async () => (await allEvents(t)).filter((e) => e.type === 'request.refused' && !e.data.aggregated);
    expect(await recorded()).toHaveLength(REFUSALS_RECORDED_PER_MINUTE);
    // Another identity, the same minute: its first refusal is its own to record.
    const other = await t.as.pipeline({ repository: 'acme/other' }, 'repo:acme/other:ref:refs/heads/main');
    await refuse(other);
    expect((await recorded()).at(-1)?.actor).toMatchObject({ sub: 'repo:acme/other:ref:refs/heads/main' });
    // The noisy identity, a minute later: recorded one by one again.
    t.clock.set(minute + MINUTE);
    await refuse(await t.as.pipeline());
    expect(await recorded()).toHaveLength(REFUSALS_RECORDED_PER_MINUTE + 2);
  });

  it('counts a refusal of a minute that ended here into its one event, when it read the clock there late (another replica\'s clock, a slow commit)', async () => {
    t = await start({ requestsPerMinute: 1_000 });
    const minute = nextMinute();
    t.clock.set(minute + 59_000);
    const job = await t.as.pipeline();
    const refuse = async () => expect((await post(job, { ...read, scopes: ['db:admin'] })).status).toBe(403);
    for (let i = 0; i < REFUSALS_RECORDED_PER_MINUTE + 1; i += 1) await refuse();
    t.clock.set(minute + MINUTE + 1);
    await t.broker.scheduler.runAll(); // the minute is over here
    t.clock.set(minute + 59_500); // a refusal that read the clock in it, committed after that run
    await refuse();
    t.clock.set(minute + 2 * MINUTE + 5_000);
    await t.broker.scheduler.runAll();
    await t.broker.scheduler.runAll();
    const events = (await allEvents(t)).filter((e) => e.type === 'request.refused');
    expect(events.filter((e) => !e.data.aggregated)).toHaveLength(REFUSALS_RECORDED_PER_MINUTE);
    expect(events.filter((e) => e.data.aggregated).map((e) => e.data.count)).toEqual([2]);
  });

  it('forgets every idle caller\'s window, minute and load in one run of the scheduler, however many piled up while it was stopped', async () => {
    t = await start({ requestsPerMinute: 1_000 });
    const idle = 1_200; // more than two of the scheduler's batches
    const second = Math.floor(t.clock() / 1000) - 3_600;
    const minute = Math.floor((t.clock() - 3 * 3_600_000) / MINUTE) * MINUTE;
    const holders = Array.from({ length: idle }, (_, i) => `identity:https://ci.test\nidle-${i}`);
    await t.db.sql(`INSERT INTO caller_rates (holder, second, counts) VALUES ${holders.map(() => '(?, ?, ?)').join(', ')}`, holders.flatMap((h) => [h, second, '']));
    await t.db.sql(
      `INSERT INTO caller_minutes (holder, minute, refusals_recorded, refusals_counted, actor_iss, actor_sub) VALUES ${holders.map(() => '(?, ?, 1, 0, ?, ?)').join(', ')}`,
      holders.flatMap((h, i) => [h, minute, 'https://ci.test', `idle-${i}`]),
    );
    await t.db.sql(`INSERT INTO holder_load (holder, live, pending) VALUES ${holders.map(() => '(?, 0, 0)').join(', ')}`, holders);
    const holding = (await post(await t.as.pipeline(), read)).body; // one caller still holds a grant
    expect(holding.status).toBe('issued');
    await t.broker.scheduler.runAll();
    for (const table of ['caller_rates', 'caller_minutes', 'holder_load']) {
      const left = await t.db.sql<{ n: number }>(`SELECT count(*) AS n FROM ${table} WHERE holder LIKE ?`, ['identity:https://ci.test\nidle-%']);
      expect(left.map((row) => Number(row.n)), table).toEqual([0]);
    }
    // The caller holding a grant keeps its count.
    const loads = await t.db.sql<{ live: number }>('SELECT live FROM holder_load');
    expect(loads.map((row) => Number(row.live))).toEqual([1, 1]);
  });

  it('caps what a refusal stores, however large the request', async () => {
    t = await start({});
    const scopes = Array.from({ length: 32 }, (_, i) => `x${i}:${'s'.repeat(120)}`);
    const response = await post(await t.as.pipeline(), { task_id: 't'.repeat(256), scopes, audience: 'a'.repeat(512) });
    expect(response.status).toBe(403);
    const [event] = (await allEvents(t)).filter((e) => e.type === 'request.refused');
    expect(event?.data.scopes).toHaveLength(8);
    expect(event?.data.more_scopes).toBe(24);
    expect(String(event?.data.task_id).length).toBeLessThanOrEqual(129);
    expect(String(event?.data.audience).length).toBeLessThanOrEqual(257);
    expect(JSON.stringify(event?.data).length).toBeLessThan(3_000);
  });

  it('cuts stored inputs between characters: an emoji across the cap is left out whole, never halved', async () => {
    t = await start({});
    const response = await post(await t.as.pipeline(), { task_id: `${'a'.repeat(127)}😀 and more`, scopes: ['db:admin'], audience: `${'b'.repeat(255)}😀x` });
    expect(response.status).toBe(403);
    const [event] = (await allEvents(t)).filter((e) => e.type === 'request.refused');
    expect(event?.data.task_id).toBe(`${'a'.repeat(127)}…`);
    expect(event?.data.audience).toBe(`${'b'.repeat(255)}…`);
  });
});
