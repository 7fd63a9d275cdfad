import { decodeJwt } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { startReceiver } from '../helpers/receiver.js';
import { allEvents, eventsOf } from '../helpers/records.js';

const JUSTIFICATION = 'registry down since 03:10, rolling back model 41';
const emergency = {
  task_id: 'incident-99',
  scopes: ['model:deploy'],
  audience: 'registry.acme.internal',
  break_glass: true,
  justification: JUSTIFICATION,
};

let t: TestBroker;
let receiver: Awaited<ReturnType<typeof startReceiver>>;
beforeEach(async () => {
  receiver = await startReceiver();
  t = await startTestBroker({
    configure(config) {
      config.notify = { webhooks: [{ url: receiver.url('/hook'), events: ['breakglass.used', 'breakglass.review_overdue'] }] };
    },
  });
});
afterEach(async () => {
  await t.close();
  await receiver.close();
});

const onCall = (sub = 'olga', extra: string[] = []) => t.as.person(sub, ['on-call', ...extra]);
const breakGlass = async (payload: Record<string, unknown> = emergency, token?: string) =>
  t.http.post('/v1/credentials').set(bearer(token ?? (await onCall()))).send(payload);
const reviewer = (sub = 'alice') => t.as.person(sub, ['approvers', 'ml-release']);
const review = (token: string, id: string, outcome = 'justified') =>
  t.http.post(`/v1/credentials/${id}/review`).set(bearer(token)).send({ outcome, notes: 'checked the incident log' });

describe('break-glass issuance', () => {
  it('issues a high-risk scope at once, clamped to the break-glass maxTtl, with the claim, loudly', async () => {
    const response = await breakGlass({ ...emergency, ttl_seconds: 3600 });
    expect(response.status).toBe(201);
    expect(response.body).toMatchObject({ status: 'issued', break_glass: true, expires_in: 300 });
    const claims = decodeJwt(response.body.access_token);
    expect(claims).toMatchObject({ break_glass: true, scope: 'model:deploy', sub: 'olga' });
    expect(claims.exp! - claims.iat!).toBe(300);

    expect((await eventsOf(t, response.body.request_id)).map((e) => e.type)).toEqual(['request.created', 'breakglass.used', 'token.issued']);
    expect((await eventsOf(t, response.body.request_id))[1]?.data).toMatchObject({ justification: JUSTIFICATION });
    const warning = t.logs.map((line) => JSON.parse(line)).find((line) => line.msg?.startsWith('BREAK-GLASS'));
    expect(warning).toMatchObject({ level: 'warn', request_id: response.body.request_id });
    await t.broker.notifier.idle();
    expect(receiver.deliveries.map((d) => d.body)).toEqual([
      expect.objectContaining({ event: 'breakglass.used', request_id: response.body.request_id, break_glass: true, justification: JUSTIFICATION }),
    ]);

    const view = await t.http.get(`/v1/credentials/${response.body.request_id}`).set(bearer(await onCall()));
    expect(view.body.review).toEqual({ status: 'pending', due_at: new Date(t.clock() + 86_400_000).toISOString(), overdue: false });
  });

  it.each([
    ['missing', undefined],
    ['too short', 'prod is down, help'],
    ['only spaces', ' '.repeat(40)],
    ['padded with zero-width spaces', `prod is down${'\u200b'.repeat(30)}`],
    ['padded with fillers', `prod is down${'\u3164\u2800\u115F\uFFA0'.repeat(10)}`],
    ['padded with blank null noteheads', `prod is down${'\u{1D159}'.repeat(30)}`],
  ])('refuses a %s justification with 400', async (_name, justification) => {
    const response = await breakGlass({ ...emergency, justification });
    expect(response.status).toBe(400);
    expect(response.body.errors).toEqual([{ pointer: '#/justification', detail: 'at least 20 characters' }]);
  });

  it('refuses a scope that does not allow break-glass, or that no policy grants (403)', async () => {
    const pipeline = await t.as.pipeline();
    const noBreakGlass = await breakGlass({ ...emergency, scopes: ['artifacts:read'], audience: 'x' }, pipeline);
    expect(noBreakGlass.status).toBe(403);
    expect(noBreakGlass.body).toMatchObject({ type: expect.stringMatching(/policy_denied$/), scopes: ['artifacts:read'] });
    expect(noBreakGlass.body.detail).toContain('break-glass is not allowed');
    // Break-glass skips approval, never policy.
    const notGranted = await breakGlass({ ...emergency, scopes: ['model:deploy'] }, pipeline);
    expect(notGranted.status).toBe(403);
    expect(notGranted.body.scopes).toEqual(['model:deploy']);
  });
});

describe('the break-glass quota', () => {
  it('allows maxPerIdentityPerDay grants in any 24 hours, then 429 until the oldest leaves the window', async () => {
    for (let i = 0; i < 3; i += 1) {
      expect((await breakGlass({ ...emergency, task_id: `incident-${i}` })).status).toBe(201);
      t.clock.advance(60 * 60_000);
    }
    const refused = await breakGlass();
    expect(refused.status).toBe(429);
    expect(refused.body.type).toMatch(/rate_limited$/);
    expect(Number(refused.headers['retry-after'])).toBe(21 * 3600);
    // Another identity has its own quota.
    expect((await breakGlass(emergency, await onCall('oscar'))).status).toBe(201);
    t.clock.advance(21 * 3600_000);
    expect((await breakGlass()).status).toBe(201);
  });

  it('counts a grant once: its child tokens are no new use', async () => {
    const first = await breakGlass();
    expect(first.status).toBe(201);
    for (const task of ['child-1', 'child-2']) {
      const child = await t.http.post('/oauth2/token').type('form').send({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: first.body.access_token,
        subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        task_id: task,
      });
      expect(child.status).toBe(200);
      expect(decodeJwt(child.body.access_token).break_glass).toBe(true);
    }
    // Nor a grant to review: the root's review covers its children, and a review of one says so.
    const children = (await t.http.get('/v1/credentials').set(bearer(await onCall()))).body.items.filter((r: { request_id: string }) => r.request_id !== first.body.request_id);
    const childReview = await review(await reviewer(), children[0].request_id);
    expect(childReview.status).toBe(409);
    expect(childReview.body.detail).toBe(`A token made from a break-glass grant is reviewed with that grant: review ${first.body.request_id}.`);
    expect((await breakGlass({ ...emergency, task_id: 'incident-2' })).status).toBe(201);
    expect((await breakGlass({ ...emergency, task_id: 'incident-3' })).status).toBe(201);
    expect((await breakGlass({ ...emergency, task_id: 'incident-4' })).status).toBe(429);
  });

  it('holds under concurrent requests', async () => {
    const token = await onCall();
    const responses = await Promise.all(Array.from({ length: 10 }, (_, i) => breakGlass({ ...emergency, task_id: `race-${i}` }, token)));
    expect(responses.filter((r) => r.status === 201)).toHaveLength(3);
    expect(responses.filter((r) => r.status === 429)).toHaveLength(7);
  });

  it('counts inside the issuing transaction, after the token is signed', async () => {
    const identity = { iss: 'https://sso.test', sub: 'olga', idp: 'sso', kind: 'person' as const, claims: { groups: ['on-call'] }, roles: new Set<never>() };
    const ask = { taskId: 'race', scopes: ['model:deploy'], audience: 'registry.acme.internal', breakGlass: true, justification: JUSTIFICATION };
    // All five run to their signing step before any records: a count taken there would let all through.
    const outcomes = await Promise.allSettled(Array.from({ length: 5 }, () => t.broker.credentials.request(identity, ask)));
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(3);
    expect(outcomes.filter((o) => o.status === 'rejected').map((o) => (o as PromiseRejectedResult).reason.type)).toEqual(['rate_limited', 'rate_limited']);
  });
});

describe('post-review', () => {
  it('is recorded once by an approver who is not the requester', async () => {
    const { body: grant } = await breakGlass();
    const first = await review(await reviewer(), grant.request_id);
    expect(first.status).toBe(200);
    expect(first.body.review).toEqual({
      status: 'done',
      due_at: expect.any(String),
      overdue: false,
      outcome: 'justified',
      notes: 'checked the incident log',
      reviewer: { iss: 'https://sso.test', sub: 'alice' },
      reviewed_at: new Date(t.clock()).toISOString(),
    });
    expect((await review(await reviewer('bob'), grant.request_id, 'unjustified')).status).toBe(409);
    expect((await eventsOf(t, grant.request_id)).filter((e) => e.type === 'breakglass.reviewed')).toHaveLength(1);
  });

  it('refuses the requester (403 separation_of_duties), a non-approver (403) and an outsider (404)', async () => {
    const olga = await onCall('olga', ['approvers', 'ml-release']);
    const { body: grant } = await breakGlass(emergency, olga);
    const own = await review(olga, grant.request_id);
    expect(own.status).toBe(403);
    expect(own.body.type).toMatch(/separation_of_duties$/);
    const auditor = await review(await t.as.person('ivy', ['auditors']), grant.request_id);
    expect(auditor.status).toBe(403);
    expect(auditor.body.type).toMatch(/policy_denied$/);
    expect((await review(await t.as.person('mallory', []), grant.request_id)).status).toBe(404);
    expect((await review(await t.as.pipeline(), grant.request_id)).status).toBe(404);
    // olga's try at reviewing her own emergency is on record; the others' mistakes are not.
    expect((await eventsOf(t, grant.request_id)).filter((e) => e.type === 'decision.refused')).toEqual([
      expect.objectContaining({ actor: expect.objectContaining({ sub: 'olga' }), data: expect.objectContaining({ action: 'review', problem: 'separation_of_duties' }) }),
    ]);
  });

  it('refuses to review a grant that was not break-glass (404)', async () => {
    const { body: plain } = await t.http.post('/v1/credentials').set(bearer(await onCall())).send({ ...emergency, scopes: ['logs:read'], break_glass: false });
    expect((await review(await reviewer(), plain.request_id)).status).toBe(404);
  });

  it('lists grants by review state for approvers and auditors only', async () => {
    const { body: a } = await breakGlass({ ...emergency, task_id: 'a' });
    t.clock.advance(1000);
    const { body: b } = await breakGlass({ ...emergency, task_id: 'b' });
    await review(await reviewer(), a.request_id);
    const list = async (token: string, state: string) => t.http.get(`/v1/break-glass?review=${state}`).set(bearer(token));
    for (const token of [await reviewer(), await t.as.person('ivy', ['auditors'])]) {
      expect((await list(token, 'pending')).body).toEqual({ items: [expect.objectContaining({ request_id: b.request_id })], next_cursor: null });
      expect((await list(token, 'done')).body.items.map((i: { request_id: string }) => i.request_id)).toEqual([a.request_id]);
    }
    // An approver of other scopes learns nothing of these grants.
    expect((await list(await t.as.person('erin', ['approvers']), 'pending')).body).toEqual({ items: [], next_cursor: null });
    const denied = await list(await t.as.pipeline(), 'pending');
    expect(denied.status).toBe(403);
    expect(denied.body.type).toMatch(/policy_denied$/);
    expect((await list(await reviewer(), 'sometime')).status).toBe(400);
  });
});

describe('overdue reviews', () => {
  it('are flagged once and only once, also across a restart, and notify the webhooks', async () => {
    const { body: late } = await breakGlass({ ...emergency, task_id: 'late' });
    const { body: onTime } = await breakGlass({ ...emergency, task_id: 'on-time' });
    await review(await reviewer(), onTime.request_id);

    t.clock.advance(24 * 3600_000 - 5_000);
    await t.broker.scheduler.runAll();
    expect((await allEvents(t)).filter((e) => e.type === 'breakglass.review_overdue')).toHaveLength(0);
    // At the due instant it is not yet past due: a review then is on time, as its view says.
    t.clock.advance(5_000);
    await t.broker.scheduler.runAll();
    expect((await allEvents(t)).filter((e) => e.type === 'breakglass.review_overdue')).toHaveLength(0);

    t.clock.advance(5_000);
    await t.broker.scheduler.runAll();
    await t.broker.scheduler.runAll();
    await t.restart();
    await t.broker.scheduler.runAll();
    await t.broker.notifier.idle();

    const overdue = (await allEvents(t)).filter((e) => e.type === 'breakglass.review_overdue');
    expect(overdue.map((e) => e.requestId)).toEqual([late.request_id]);
    expect(receiver.deliveries.filter((d) => d.body.event === 'breakglass.review_overdue').map((d) => d.body.request_id)).toEqual([late.request_id]);
    const view = await t.http.get(`/v1/credentials/${late.request_id}`).set(bearer(await reviewer()));
    expect(view.body.review).toMatchObject({ status: 'pending', overdue: true });
  });

  it('show as overdue once past due, before the scheduler has flagged them, as a grant past its expiry shows expired', async () => {
    const { body: grant } = await breakGlass();
    const seen = async () => (await t.http.get(`/v1/credentials/${grant.request_id}`).set(bearer(await reviewer()))).body.review;
    t.clock.advance(24 * 3600_000);
    expect(await seen()).toMatchObject({ status: 'pending', overdue: false });
    t.clock.advance(60_000);
    // No scheduler run yet: nothing flagged, and still the view does not lag the clock.
    expect((await allEvents(t)).filter((e) => e.type === 'breakglass.review_overdue')).toHaveLength(0);
    expect(await seen()).toMatchObject({ status: 'pending', overdue: true });
    const listed = await t.http.get('/v1/break-glass?review=pending').set(bearer(await t.as.person('ivy', ['auditors'])));
    expect(listed.body.items).toEqual([expect.objectContaining({ request_id: grant.request_id, review: expect.objectContaining({ overdue: true }) })]);
  });
});
