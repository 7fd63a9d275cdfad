import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { createTestIssuer, type TestIssuer } from '../helpers/issuer.js';

/**
 * CONTRACT section 1, "People": separation of duties counts people, not (issuer, subject)
 * pairs. Every test here is an attacker's: one person under two identities, or one name under
 * another spelling, trying to complete a high-risk grant alone.
 */

let t: TestBroker;
let sso2: TestIssuer;
beforeEach(async () => {
  sso2 = await createTestIssuer('https://sso2.test');
  t = await startTestBroker({
    configure(config) {
      const identity = config.identity as { issuers: Record<string, unknown>[] };
      identity.issuers.push({
        name: 'sso2',
        kind: 'person',
        issuer: sso2.iss,
        jwks: sso2.jwks,
        audiences: ['jit-broker'],
        algorithms: ['ES256'],
        usernameClaim: 'preferred_username',
      });
      (config.roles as unknown[]).push({ role: 'approver', match: { issuer: 'sso2', claims: { groups: 'approvers' } } });
      (config.policies as unknown[]).push({ id: 'on-call-2', match: { issuer: 'sso2', claims: { groups: 'on-call' } }, scopes: ['logs:read'] });
      config.people = [{ name: 'bob', aliases: [{ issuer: 'ci', username: 'bob-gh' }, { issuer: 'sso', username: 'bob@acme.com' }] }];
    },
  });
});
afterEach(async () => {
  await t.close();
});

const deploy = { task_id: 'deploy-7', scopes: ['model:deploy'], audience: 'registry.acme.internal', justification: 'release 7' };
const dbAdmin = { task_id: 'migrate-3', scopes: ['db:admin'], audience: 'db.acme.internal' };
const EMERGENCY = 'registry down since 03:10, rolling back model 41';

const post = async (token: string, payload: Record<string, unknown>) => t.http.post('/v1/credentials').set(bearer(token)).send(payload);
const decide = (token: string, id: string, digest: string, decision: 'approve' | 'deny' = 'approve') =>
  t.http.post(`/v1/credentials/${id}/approvals`).set(bearer(token)).send({ decision, reason: 'looked at it', digest });
/** A person at the second SSO, which the first knows nothing of. */
const atSso2 = (sub: string, groups: string[], username = sub) =>
  sso2.token(sub, { groups, preferred_username: username }, { now: t.clock() });
const dbJob = (actor: string) => t.as.pipeline({ repository: 'acme/db', actor }, 'repo:acme/db:ref:refs/heads/main');
const expectProblem = (response: { status: number; body: { type?: string } }, status: number, type: string) => {
  expect(response.status).toBe(status);
  expect(response.body.type).toMatch(new RegExp(`${type}$`));
};

describe('one person under identities at two issuers', () => {
  it('cannot approve their own request: 403, while another person can', async () => {
    const { body: pending } = await post(await t.as.person('bob', ['on-call']), deploy);
    expect(pending.status).toBe('pending_approval');
    const bobElsewhere = await atSso2('u-4711', ['approvers'], 'bob');
    // model:deploy's approvers are ml-release at sso: bob at sso2 cannot even see it (404 first).
    expectProblem(await decide(bobElsewhere, pending.request_id, pending.digest), 404, 'not_found');

    const job = await dbJob('bob');
    const { body: request } = await post(job, dbAdmin);
    expectProblem(await decide(bobElsewhere, request.request_id, request.digest), 403, 'separation_of_duties');
    expect((await decide(await atSso2('u-1', ['approvers'], 'carol'), request.request_id, request.digest)).status).toBe(200);
  });

  it('cannot give both approvals of a 2-of-N scope: the second counts as the same approver (409)', async () => {
    const { body: request } = await post(await dbJob('pat'), dbAdmin);
    expect(request.approvals_required).toBe(2);
    const first = await decide(await t.as.person('carol', ['approvers']), request.request_id, request.digest);
    expect(first.body.status).toBe('pending_approval');
    const again = await decide(await atSso2('c-99', ['approvers'], 'CAROL'), request.request_id, request.digest);
    expectProblem(again, 409, 'conflict');
    expect((await t.http.get(`/v1/credentials/${request.request_id}`).set(bearer(await dbJob('pat')))).body.status).toBe('pending_approval');
    const second = await decide(await atSso2('d-1', ['approvers'], 'dave'), request.request_id, request.digest);
    expect(second.body).toMatchObject({ status: 'approved', approvals: [{ sub: 'carol' }, { sub: 'd-1' }] });
  });

  it('cannot review their own break-glass grant', async () => {
    const grant = await post(await t.as.person('bob', ['on-call']), {
      task_id: 'incident-1',
      scopes: ['logs:read'],
      audience: 'logs.acme.internal',
      break_glass: true,
      justification: EMERGENCY,
    });
    expect(grant.status).toBe(201);
    const bobElsewhere = await atSso2('u-4711', ['approvers'], 'bob');
    const review = await t.http
      .post(`/v1/credentials/${grant.body.request_id}/review`)
      .set(bearer(bobElsewhere))
      .send({ outcome: 'justified', notes: 'all good' });
    expectProblem(review, 403, 'separation_of_duties');
    const byCarol = await t.http
      .post(`/v1/credentials/${grant.body.request_id}/review`)
      .set(bearer(await atSso2('c-1', ['approvers'], 'carol')))
      .send({ outcome: 'justified', notes: 'checked the pager log' });
    expect(byCarol.status).toBe(200);
  });

  it('cannot double the break-glass quota: it counts per person as well as per identity', async () => {
    const emergency = (i: number) => ({ task_id: `incident-${i}`, scopes: ['logs:read'], audience: 'logs', break_glass: true, justification: EMERGENCY });
    const bob = await t.as.person('bob', ['on-call']);
    for (let i = 0; i < 3; i += 1) expect((await post(bob, emergency(i))).status).toBe(201);
    const refused = await post(await atSso2('u-4711', ['on-call'], 'Bob'), emergency(4));
    expectProblem(refused, 429, 'rate_limited');
    expect(refused.body.detail).toMatch(/per person/);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
    // Another person at that SSO has a quota of their own.
    expect((await post(await atSso2('c-1', ['on-call'], 'carol'), emergency(5))).status).toBe(201);
  });

  it('cannot hold both halves of a toxic combination: their job and their own request count as one person', async () => {
    const bobOnCall = await t.as.person('bob', ['on-call']);
    const { body: pending } = await post(bobOnCall, { ...deploy, task_id: 'hotfix' });
    expect(pending.status).toBe('pending_approval'); // live: pending requests count
    const train = await post(await t.as.ml({ actor: 'bob' }), { task_id: 'train', scopes: ['model:train'], audience: 'registry.acme.internal' });
    expectProblem(train, 403, 'separation_of_duties');
    expect(train.body).toMatchObject({ rule: 'train-vs-deploy', conflicting_request_id: pending.request_id });
    expect(train.body.detail).toMatch(/one person/);
    // Someone else's job trains freely.
    expect((await post(await t.as.ml({ actor: 'carol' }), { task_id: 'train', scopes: ['model:train'], audience: 'registry.acme.internal' })).status).toBe(201);
  });
});

describe('one name under another spelling is one person', () => {
  it.each([
    ['a trailing space', 'bob '],
    ['a zero-width space', 'b\u200Bob'],
    ['full-width letters', 'ＢＯＢ'],
    ['capitals', 'BOB'],
    ['a bidi mark', '\u200Ebob'],
    ['a blank musical null notehead', 'bob\u{1D159}'],
  ])('refuses the job initiator spelled with %s', async (_case, actor) => {
    const { body: request } = await post(await dbJob(actor), dbAdmin);
    expectProblem(await decide(await t.as.person('bob', ['approvers']), request.request_id, request.digest), 403, 'separation_of_duties');
  });

  it('refuses straße approving the job STRASSE started, and ẞ too', async () => {
    const { body: request } = await post(await dbJob('STRASSE'), dbAdmin);
    for (const name of ['straße', 'STRAẞE', 'Straße']) {
      expectProblem(await decide(await t.as.person(name, ['approvers']), request.request_id, request.digest), 403, 'separation_of_duties');
    }
  });
});

describe('people aliases', () => {
  it('make a CI login and an SSO username one person for every restriction', async () => {
    const { body: request } = await post(await dbJob('bob-gh'), dbAdmin);
    const bobAtSso = await t.as.person('b-7', ['approvers'], { preferred_username: 'Bob@ACME.com' });
    expectProblem(await decide(bobAtSso, request.request_id, request.digest), 403, 'separation_of_duties');
    // bob-gh elsewhere is someone else: the alias is only for the issuer it names.
    const bobGhAtSso2 = await atSso2('x', ['approvers'], 'bob-gh');
    expect((await decide(bobGhAtSso2, request.request_id, request.digest)).status).toBe(200);
  });

  it('never grant: the aliased person cannot see, collect, end or list the job\'s request, nor gain its roles', async () => {
    const job = await t.as.ml({ actor: 'bob-gh' });
    const { body: request } = await post(job, deploy);
    const bob = await t.as.person('b-7', [], { preferred_username: 'bob@acme.com' });
    expect((await t.http.get(`/v1/credentials/${request.request_id}`).set(bearer(bob))).status).toBe(404);
    expect((await t.http.post(`/v1/credentials/${request.request_id}/token`).set(bearer(bob))).status).toBe(404);
    expect((await t.http.post(`/v1/credentials/${request.request_id}/complete`).set(bearer(bob))).status).toBe(404);
    expect((await t.http.post(`/v1/credentials/${request.request_id}/revoke`).set(bearer(bob)).send({ reason: 'mine' })).status).toBe(404);
    expect((await t.http.get('/v1/credentials').set(bearer(bob))).body.items).toEqual([]);
    // An auditor's username on a CI job does not make the job an auditor.
    const jobOfIvy = await t.as.pipeline({ actor: 'ivy' });
    await t.as.person('ivy', ['auditors']);
    expect((await t.http.get('/v1/audit/verify').set(bearer(jobOfIvy))).status).toBe(403);
  });
});

describe('the approvals endpoint', () => {
  it('answers 404 before 403: a 403 never tells an outsider that a request exists', async () => {
    const { body: request } = await post(await dbJob('bob'), dbAdmin);
    // bob started the job but holds no approver role: to him the request does not exist.
    const bob = await t.as.person('bob', []);
    const missing = await decide(bob, '0190f0c4-0000-7000-8000-000000000000', request.digest);
    const real = await decide(bob, request.request_id, request.digest);
    expectProblem(real, 404, 'not_found');
    expect(real.body.title).toBe(missing.body.title);
    // An approver who started it sees it, and is refused for who they are.
    expectProblem(await decide(await t.as.person('bob', ['approvers']), request.request_id, request.digest), 403, 'separation_of_duties');
  });

  it('lists no request of a job its caller started, under any spelling or alias', async () => {
    await post(await dbJob('bob-gh'), dbAdmin);
    t.clock.advance(1); // the listing is in creation order
    await post(await dbJob('Bob'), { ...dbAdmin, task_id: 'other' });
    t.clock.advance(1);
    await post(await dbJob('carol'), { ...dbAdmin, task_id: 'carols' });
    // The alias is named bob: bob-gh at ci, bob@acme.com at sso, and plain bob anywhere are one person.
    for (const approver of [
      await t.as.person('b-7', ['approvers'], { preferred_username: 'bob@acme.com' }),
      await t.as.person('bob', ['approvers']),
      await atSso2('u-4711', ['approvers'], 'BOB'),
    ]) {
      const listed = await t.http.get('/v1/approvals').set(bearer(approver));
      expect(listed.body.items.map((r: { initiator: string }) => r.initiator)).toEqual(['carol']);
    }
    const byCarol = await t.http.get('/v1/approvals').set(bearer(await t.as.person('carol', ['approvers'])));
    expect(byCarol.body.items.map((r: { initiator: string }) => r.initiator)).toEqual(['bob-gh', 'Bob']);
  });
});
