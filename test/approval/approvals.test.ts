import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import YAML from 'yaml';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { requestDigest } from '../../src/requests/index.js';
import { baseConfig, bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { REFUSALS_RECORDED_PER_MINUTE } from '../../src/credentials/admission.js';
import { allEvents, eventsOf } from '../helpers/records.js';

let t: TestBroker;
beforeEach(async () => {
  t = await startTestBroker();
});
afterEach(async () => {
  await t.close();
});

const deploy = { task_id: 'deploy-7', scopes: ['model:deploy'], audience: 'registry.acme.internal', justification: 'release 7' };
const dbAdmin = { task_id: 'migrate-3', scopes: ['db:admin'], audience: 'db.acme.internal' };

const post = async (token: string, payload: Record<string, unknown>) =>
  t.http.post('/v1/credentials').set(bearer(token)).send(payload);

const decide = (token: string, id: string, decision: 'approve' | 'deny', digest: string, reason = 'looked at it') =>
  t.http.post(`/v1/credentials/${id}/approvals`).set(bearer(token)).send({ decision, reason, digest });

const releaser = (sub = 'alice', claims: Record<string, unknown> = {}) => t.as.person(sub, ['approvers', 'ml-release'], claims);
const dba = (sub: string) => t.as.person(sub, ['approvers']);
const dbWorkload = () => t.as.pipeline({ repository: 'acme/db' }, 'repo:acme/db:ref:refs/heads/main');

describe('a high-risk request', () => {
  it('waits for approval: 202 with its digest, approvals_required and expiry', async () => {
    const workload = await t.as.ml({ actor: 'bob' });
    const response = await post(workload, deploy);
    expect(response.status).toBe(202);
    expect(response.headers.location).toBe(`/v1/credentials/${response.body.request_id}`);
    expect(response.body).toEqual({
      request_id: expect.any(String),
      status: 'pending_approval',
      approvals_required: 1,
      approvals: [],
      digest: requestDigest({
        requestId: response.body.request_id,
        requester: { iss: 'https://ci.test', sub: 'repo:acme/ml:ref:refs/heads/main' },
        initiator: 'bob', // who started the job is part of what an approver signs off on
        taskId: 'deploy-7',
        scopes: ['model:deploy'],
        audience: 'registry.acme.internal',
        ttlSeconds: 600,
        justification: 'release 7',
        breakGlass: false,
      }),
      expires_at: new Date(t.clock() + 3_600_000).toISOString(),
    });
    expect(response.body).not.toHaveProperty('access_token');
  });

  it('is approved by a different, authorised person; the token names the approver and its TTL starts at collection', async () => {
    const workload = await t.as.ml();
    const { body: pending } = await post(workload, deploy);
    const approved = await decide(await releaser(), pending.request_id, 'approve', pending.digest, 'release 7 reviewed');
    expect(approved.status).toBe(200);
    expect(approved.body).toMatchObject({
      status: 'approved',
      approvals: [{ iss: 'https://sso.test', sub: 'alice', decision: 'approve', reason: 'release 7 reviewed', at: expect.any(String) }],
    });

    t.clock.advance(5 * 60_000);
    const collected = await t.http.post(`/v1/credentials/${pending.request_id}/token`).set(bearer(await t.as.ml()));
    expect(collected.status).toBe(201);
    const claims = decodeJwt(collected.body.access_token);
    expect(claims.iat).toBe(Math.floor(t.clock() / 1000));
    expect(claims.exp).toBe(Math.floor(t.clock() / 1000) + 600);
    expect(claims.approvers).toEqual([{ iss: 'https://sso.test', sub: 'alice', at: approved.body.approvals[0].at }]);

    const types = (await eventsOf(t, pending.request_id)).map((e) => e.type);
    expect(types).toEqual(['request.created', 'approval.recorded', 'request.approved', 'token.issued']);
    const recorded = (await eventsOf(t, pending.request_id))[1];
    expect(recorded).toMatchObject({
      actor: { iss: 'https://sso.test', sub: 'alice' },
      data: { decision: 'approve', reason: 'release 7 reviewed', digest: pending.digest },
    });
  });
});

describe('who may decide', () => {
  it('refuses the requester itself (403 separation_of_duties)', async () => {
    const olga = await t.as.person('olga', ['on-call', 'approvers', 'ml-release']);
    const { body: pending } = await post(olga, { ...deploy, task_id: 'fix' });
    expect(pending.status).toBe('pending_approval');
    const response = await decide(olga, pending.request_id, 'approve', pending.digest);
    expect(response.status).toBe(403);
    expect(response.body.type).toMatch(/separation_of_duties$/);
  });

  it('records each refused decision in the audit chain, a few a minute per decider, the rest counted into one event', async () => {
    const olga = await t.as.person('olga', ['on-call', 'approvers', 'ml-release']);
    const { body: pending } = await post(olga, { ...deploy, task_id: 'fix' });
    const minute = Math.ceil(t.clock() / 60_000) * 60_000;
    t.clock.set(minute);
    for (let i = 0; i < REFUSALS_RECORDED_PER_MINUTE + 2; i += 1) expect((await decide(olga, pending.request_id, 'approve', pending.digest)).status).toBe(403);
    const refused = (await eventsOf(t, pending.request_id)).filter((e) => e.type === 'decision.refused');
    expect(refused).toHaveLength(REFUSALS_RECORDED_PER_MINUTE);
    expect(refused[0]).toMatchObject({
      actor: { sub: 'olga' },
      data: { action: 'approve', problem: 'separation_of_duties', detail: expect.stringMatching(/requester cannot decide/), count: 1 },
    });
    // The other two, in one event once the minute is over, under olga.
    t.clock.set(minute + 2 * 60_000 + 5_000);
    await t.broker.scheduler.runAll();
    const aggregated = (await allEvents(t)).filter((e) => e.type === 'request.refused' && e.data.aggregated);
    expect(aggregated).toEqual([expect.objectContaining({ actor: expect.objectContaining({ sub: 'olga' }), data: expect.objectContaining({ count: 2 }) })]);
    // A decision refused for another reason than who decides (a stale digest) is the caller's mistake: not recorded.
    await decide(await releaser('carol'), pending.request_id, 'approve', 'f'.repeat(64));
    expect((await eventsOf(t, pending.request_id)).filter((e) => e.type === 'decision.refused')).toHaveLength(REFUSALS_RECORDED_PER_MINUTE);
  });

  it('refuses the person who started the requesting job, whatever the case of the name', async () => {
    const { body: pending } = await post(await t.as.ml({ actor: 'bob' }), deploy);
    for (const name of ['bob', 'Bob']) {
      const response = await decide(await releaser(name.toLowerCase(), { preferred_username: name }), pending.request_id, 'approve', pending.digest);
      expect(response.status).toBe(403);
      expect(response.body.type).toMatch(/separation_of_duties$/);
    }
    expect((await decide(await releaser('carol'), pending.request_id, 'approve', pending.digest)).status).toBe(200);
  });

  it('refuses an approver whose token leaves out the username at the door (401), whatever the request', async () => {
    // The person issuer names its usernameClaim, so the claim is required (CONTRACT section 1):
    // leaving it out must not make the approver nobody, who could then approve bob's own job.
    const { body: started } = await post(await t.as.ml({ actor: 'bob' }), deploy);
    const nameless = await releaser('bob', { preferred_username: undefined });
    const refused = await decide(nameless, started.request_id, 'approve', started.digest);
    expect(refused.status).toBe(401);
    expect(refused.body.type).toMatch(/invalid_token$/);
    expect((await t.http.get('/v1/approvals').set(bearer(nameless))).status).toBe(401);
  });

  it('hides the request (404) from a workload, a person without the approver role, and an approver outside the scope\'s approvers', async () => {
    const { body: pending } = await post(await t.as.ml(), deploy);
    const outsiders = [
      await t.as.pipeline(),
      await t.as.pipeline({}, 'resource-server:registry'),
      await t.as.person('dave', ['ml-release']),
      await t.as.person('erin', ['approvers']),
    ];
    for (const outsider of outsiders) {
      const response = await decide(outsider, pending.request_id, 'approve', pending.digest);
      expect(response.status).toBe(404);
      expect((await t.http.get(`/v1/credentials/${pending.request_id}`).set(bearer(outsider))).status).toBe(404);
    }
    // An SSO subject equal to the requester's subject is another identity: the issuer differs.
    const lookalike = await t.as.person('repo:acme/ml:ref:refs/heads/main', []);
    expect((await t.http.get(`/v1/credentials/${pending.request_id}`).set(bearer(lookalike))).status).toBe(404);
    // Auditors see it; they cannot decide it.
    const auditor = await t.as.person('ivy', ['auditors']);
    expect((await t.http.get(`/v1/credentials/${pending.request_id}`).set(bearer(auditor))).status).toBe(200);
    expect((await decide(auditor, pending.request_id, 'approve', pending.digest)).status).toBe(404);
  });

  it('refuses a decision on a digest that is not the request\'s (409)', async () => {
    const { body: pending } = await post(await t.as.ml(), deploy);
    const response = await decide(await releaser(), pending.request_id, 'approve', 'f'.repeat(64));
    expect(response.status).toBe(409);
    expect(response.body.type).toMatch(/conflict$/);
    expect((await t.http.get(`/v1/credentials/${pending.request_id}`).set(bearer(await t.as.ml()))).body.status).toBe('pending_approval');
  });

  it('answers 400 for a malformed decision', async () => {
    const { body: pending } = await post(await t.as.ml(), deploy);
    const response = await t.http
      .post(`/v1/credentials/${pending.request_id}/approvals`)
      .set(bearer(await releaser()))
      .send({ decision: 'maybe', reason: '', digest: pending.digest });
    expect(response.status).toBe(400);
    expect(response.body.errors.map((e: { pointer: string }) => e.pointer).sort()).toEqual(['#/decision', '#/reason']);

    // A reason that would redraw the approver's terminal line is refused, not recorded.
    const spoofed = await decide(await releaser(), pending.request_id, 'deny', pending.digest, 'ok\rapproved');
    expect(spoofed.status).toBe(400);
    expect(spoofed.body.errors).toEqual([{ pointer: '#/reason', detail: expect.stringMatching(/control characters/) }]);
  });
});

describe('counting decisions', () => {
  it('needs two distinct people for approvals: 2, and refuses a second decision by the same one', async () => {
    const { body: pending } = await post(await dbWorkload(), dbAdmin);
    expect(pending.approvals_required).toBe(2);
    const first = await decide(await dba('frank'), pending.request_id, 'approve', pending.digest);
    expect(first.body.status).toBe('pending_approval');
    const again = await decide(await dba('frank'), pending.request_id, 'approve', pending.digest);
    expect(again.status).toBe(409);
    const second = await decide(await dba('grace'), pending.request_id, 'approve', pending.digest);
    expect(second.body.status).toBe('approved');
    expect(second.body.approvals.map((a: { sub: string }) => a.sub)).toEqual(['frank', 'grace']);
    const late = await decide(await dba('heidi'), pending.request_id, 'approve', pending.digest);
    expect(late.status).toBe(409);
  });

  it('names the approvers in the order they decided, in the view, the token and the audit row alike', async () => {
    const { body: pending } = await post(await dbWorkload(), dbAdmin);
    // zed before amy: decision time and alphabetical order disagree.
    await decide(await dba('zed'), pending.request_id, 'approve', pending.digest);
    t.clock.advance(1_000);
    const approved = await decide(await dba('amy'), pending.request_id, 'approve', pending.digest);
    expect(approved.body.approvals.map((a: { sub: string }) => a.sub)).toEqual(['zed', 'amy']);
    const collected = await t.http.post(`/v1/credentials/${pending.request_id}/token`).set(bearer(await dbWorkload()));
    expect((decodeJwt(collected.body.access_token).approvers as { sub: string }[]).map((a) => a.sub)).toEqual(['zed', 'amy']);
    const audit = await t.http.get('/v1/audit/issuances?scope=db:admin').set(bearer(await t.as.person('ivy', ['auditors'])));
    expect(audit.body.items[0].approvers.map((a: { sub: string }) => a.sub)).toEqual(['zed', 'amy']);
  });

  it('lets one deny veto the request', async () => {
    const { body: pending } = await post(await dbWorkload(), dbAdmin);
    await decide(await dba('frank'), pending.request_id, 'approve', pending.digest);
    const denied = await decide(await dba('grace'), pending.request_id, 'deny', pending.digest, 'not during the freeze');
    expect(denied.status).toBe(200);
    expect(denied.body.status).toBe('denied');
    expect((await decide(await dba('heidi'), pending.request_id, 'approve', pending.digest)).status).toBe(409);
    const collect = await t.http.post(`/v1/credentials/${pending.request_id}/token`).set(bearer(await dbWorkload()));
    expect(collect.status).toBe(409);
    expect((await eventsOf(t, pending.request_id)).map((e) => e.type)).toContain('request.denied');
  });
});

describe('collecting', () => {
  it('hands out the token exactly once, even to 20 concurrent collects', async () => {
    const workload = await t.as.ml();
    const { body: pending } = await post(workload, deploy);
    await decide(await releaser(), pending.request_id, 'approve', pending.digest);
    const responses = await Promise.all(
      Array.from({ length: 20 }, () => t.http.post(`/v1/credentials/${pending.request_id}/token`).set(bearer(workload))),
    );
    expect(responses.map((r) => r.status).sort()).toEqual([201, ...Array<number>(19).fill(409)]);
    expect(responses.filter((r) => r.body.access_token).length).toBe(1);
    const issued = await t.db.sql<{ n: number }>('SELECT count(*) AS n FROM issuances WHERE request_id = ?', [pending.request_id]);
    expect(Number(issued[0]?.n)).toBe(1);
    expect((await eventsOf(t, pending.request_id)).filter((e) => e.type === 'token.issued')).toHaveLength(1);
  });

  it('refuses to collect before approval (409) and hides the request from any other identity (404)', async () => {
    const { body: pending } = await post(await t.as.ml(), deploy);
    expect((await t.http.post(`/v1/credentials/${pending.request_id}/token`).set(bearer(await t.as.ml()))).status).toBe(409);
    await decide(await releaser(), pending.request_id, 'approve', pending.digest);
    for (const other of [await t.as.pipeline(), await releaser(), await t.as.person('ivy', ['auditors'])]) {
      expect((await t.http.post(`/v1/credentials/${pending.request_id}/token`).set(bearer(other))).status).toBe(404);
    }
    // It takes no body; an empty JSON object is no body.
    const withBody = await t.http.post(`/v1/credentials/${pending.request_id}/token`).set(bearer(await t.as.ml())).send({ ttl_seconds: 60 });
    expect(withBody.status).toBe(400);
    expect(withBody.body.errors).toEqual([{ pointer: '#/ttl_seconds', detail: 'unknown field' }]);
    expect((await t.http.post(`/v1/credentials/${pending.request_id}/token`).set(bearer(await t.as.ml())).send({})).status).toBe(201);
  });
});

describe('GET /v1/approvals', () => {
  it('lists what this caller may decide: never its own, nor its own job\'s, nor scopes outside its approvers', async () => {
    const { body: bobsJob } = await post(await t.as.ml({ actor: 'bob' }), deploy);
    t.clock.advance(1); // listings are oldest first
    const { body: migration } = await post(await dbWorkload(), dbAdmin);
    t.clock.advance(1);
    const olga = await t.as.person('olga', ['on-call', 'approvers', 'ml-release']);
    const { body: olgasOwn } = await post(olga, { ...deploy, task_id: 'hotfix' });

    const ids = async (token: string) =>
      ((await t.http.get('/v1/approvals').set(bearer(token))).body.items as { request_id: string }[]).map((i) => i.request_id);
    expect(await ids(await releaser('carol'))).toEqual([bobsJob.request_id, migration.request_id, olgasOwn.request_id]);
    expect(await ids(await releaser('bob'))).toEqual([migration.request_id, olgasOwn.request_id]);
    expect(await ids(olga)).toEqual([bobsJob.request_id, migration.request_id]);
    expect(await ids(await dba('frank'))).toEqual([migration.request_id]);
    expect(await ids(await t.as.ml())).toEqual([]);

    // Once frank has decided (one of two approvals), it is no longer his to decide; grace still may.
    await decide(await dba('frank'), migration.request_id, 'approve', migration.digest);
    expect(await ids(await dba('frank'))).toEqual([]);
    expect(await ids(await dba('grace'))).toEqual([migration.request_id]);
  });

  it('leaves low-risk requests to their requester and auditors: they have no approvers', async () => {
    const { body: issued } = await post(await t.as.ml(), { task_id: 'train-1', scopes: ['model:train'], audience: 'registry.acme.internal' });
    expect(issued.status).toBe('issued');
    const auditor = await t.as.person('ivy', ['auditors']);
    const seen = await t.http.get(`/v1/credentials/${issued.request_id}`).set(bearer(auditor));
    expect(seen.status).toBe(200);
    const carol = await releaser('carol');
    expect((await t.http.get(`/v1/credentials/${issued.request_id}`).set(bearer(carol))).status).toBe(404);
    expect((await decide(carol, issued.request_id, 'approve', seen.body.digest)).status).toBe(404);
  });

  it('pages with a cursor, without gaps or repeats, past requests the caller may not see', async () => {
    const created: string[] = [];
    for (let i = 0; i < 5; i += 1) {
      created.push((await post(await dbWorkload(), { ...dbAdmin, task_id: `m-${i}` })).body.request_id);
      t.clock.advance(1);
      expect((await post(await t.as.ml(), { ...deploy, task_id: `hidden-${i}` })).status).toBe(202);
      t.clock.advance(1);
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const query: string = cursor ? `?limit=2&cursor=${cursor}` : '?limit=2';
      const page = await t.http.get(`/v1/approvals${query}`).set(bearer(await dba('frank')));
      seen.push(...(page.body.items as { request_id: string }[]).map((i) => i.request_id));
      cursor = page.body.next_cursor as string | null;
    } while (cursor);
    expect(seen).toEqual(created);
    expect((await t.http.get('/v1/approvals?cursor=garbage').set(bearer(await dba('frank')))).status).toBe(400);
  });
});

describe('toxic combinations', () => {
  it('refuses a grant that would hold two scopes of a separation set, naming the rule and the live grant', async () => {
    const { body: train } = await post(await t.as.ml(), { ...deploy, scopes: ['model:train'] });
    expect(train.status).toBe('issued');
    const response = await post(await t.as.ml(), deploy);
    expect(response.status).toBe(403);
    expect(response.body).toMatchObject({
      type: expect.stringMatching(/separation_of_duties$/),
      rule: 'train-vs-deploy',
      scopes: ['model:deploy', 'model:train'],
      conflicting_request_id: train.request_id,
    });
    expect(response.body.detail).toContain('train-vs-deploy');
  });

  it('counts pending requests as live, and a request naming both scopes at once', async () => {
    const { body: pending } = await post(await t.as.ml(), deploy);
    expect(pending.status).toBe('pending_approval');
    expect((await post(await t.as.ml(), { ...deploy, scopes: ['model:train'] })).status).toBe(403);
    expect((await post(await t.as.ml(), { ...deploy, scopes: ['model:train', 'model:deploy'] })).status).toBe(403);
    // Another identity is not affected.
    const other = await t.issuers.ci.token('repo:acme/ml:ref:refs/heads/other', { repository: 'acme/ml', ref: 'refs/heads/main', actor: 'octocat' }, { now: t.clock() });
    expect((await post(other, { ...deploy, scopes: ['model:train'] })).status).toBe(201);
  });

  it('lets only one side through when both are requested concurrently', async () => {
    const workload = await t.as.ml();
    // The low-risk side goes first: its signing step awaits while the high-risk side arrives,
    // which is exactly the window a check outside the transaction would leave open.
    const responses = await Promise.all(
      Array.from({ length: 16 }, (_, i) => post(workload, { ...deploy, task_id: `race-${i}`, scopes: [i < 8 ? 'model:train' : 'model:deploy'] })),
    );
    const granted = responses.filter((r) => r.status === 201 || r.status === 202);
    const kinds = new Set(granted.map((r) => (r.status === 201 ? 'train' : 'deploy')));
    expect(granted.length).toBeGreaterThan(0);
    expect(kinds.size).toBe(1);
    expect(responses.filter((r) => r.status === 403).every((r) => r.body.rule === 'train-vs-deploy')).toBe(true);
  });

  it('re-checks inside the issuing transaction: a conflicting grant recorded while a token is being signed wins', async () => {
    const identity = {
      iss: 'https://ci.test',
      sub: 'repo:acme/ml:ref:refs/heads/main',
      idp: 'ci',
      kind: 'workload' as const,
      claims: { repository: 'acme/ml', ref: 'refs/heads/main' },
      roles: new Set<never>(),
    };
    const ask = { taskId: 'race', audience: 'registry.acme.internal', breakGlass: false };
    // The low-risk request runs until it awaits its signature...
    const train = t.broker.credentials.request(identity, { ...ask, scopes: ['model:train'] });
    // ...and in that window the high-risk request is checked and recorded, synchronously.
    const deploy = t.broker.credentials.request(identity, { ...ask, scopes: ['model:deploy'] });
    const [trained, deployed] = await Promise.allSettled([train, deploy]);
    expect(deployed).toMatchObject({ status: 'fulfilled', value: { status: 'pending_approval' } });
    expect(trained).toMatchObject({ status: 'rejected', reason: { type: 'separation_of_duties' } });
  });

  it('allows the other scope again once the first grant is revoked, or has expired', async () => {
    const workload = await t.as.ml();
    const { body: train } = await post(workload, { ...deploy, scopes: ['model:train'], ttl_seconds: 60 });
    expect((await post(workload, deploy)).status).toBe(403);
    const revoked = await t.http.post(`/v1/credentials/${train.request_id}/revoke`).set(bearer(workload)).send({ reason: 'done early' });
    expect(revoked.body.status).toBe('revoked');
    expect((await post(workload, deploy)).status).toBe(202);

    const t2 = await startTestBroker({ issuers: t.issuers, clock: t.clock });
    try {
      const again = await t2.as.ml();
      expect((await t2.http.post('/v1/credentials').set(bearer(again)).send({ ...deploy, scopes: ['model:train'], ttl_seconds: 60 })).status).toBe(201);
      expect((await t2.http.post('/v1/credentials').set(bearer(again)).send(deploy)).status).toBe(403);
      t2.clock.advance(61_000); // expired, even before the scheduler has swept it
      expect((await t2.http.post('/v1/credentials').set(bearer(await t2.as.ml())).send(deploy)).status).toBe(202);
    } finally {
      await t2.close();
    }
  });
});

describe('expiry', () => {
  it('expires a pending request after approval.timeout, and an uncollected approved one after collectWithin', async () => {
    const workload = await t.as.ml();
    const { body: pending } = await post(workload, deploy);
    const { body: migration } = await post(await dbWorkload(), dbAdmin);
    const { body: approved } = await post(await t.as.person('olga', ['on-call']), { ...deploy, task_id: 'hotfix' });
    await decide(await releaser(), approved.request_id, 'approve', approved.digest);

    t.clock.advance(15 * 60_000 + 1);
    const collect = await t.http.post(`/v1/credentials/${approved.request_id}/token`).set(bearer(await t.as.person('olga', ['on-call'])));
    expect(collect.status).toBe(409);
    await t.broker.scheduler.runAll();
    const view = async (id: string, token: string) => (await t.http.get(`/v1/credentials/${id}`).set(bearer(token))).body.status;
    expect(await view(approved.request_id, await t.as.person('olga', ['on-call']))).toBe('expired');
    expect(await view(pending.request_id, await t.as.ml())).toBe('pending_approval');

    t.clock.advance(45 * 60_000);
    expect((await decide(await releaser(), pending.request_id, 'approve', pending.digest)).status).toBe(409);
    await t.broker.scheduler.runAll();
    await t.broker.scheduler.runAll(); // idempotent: a second sweep changes nothing
    expect(await view(pending.request_id, await t.as.ml())).toBe('expired');
    for (const id of [pending.request_id, migration.request_id, approved.request_id]) {
      const expired = (await eventsOf(t, id)).filter((e) => e.type === 'request.expired');
      expect(expired).toHaveLength(1);
    }
    expect((await eventsOf(t, approved.request_id)).find((e) => e.type === 'request.expired')?.data).toMatchObject({ previous_status: 'approved' });
  });
});

describe('a reload that asks more approvals of a scope', () => {
  const reloadWith = async (edit: (raw: Record<string, any>) => void) => {
    const raw = baseConfig(t.dir, t.issuers, t.db.url) as Record<string, any>;
    edit(raw);
    const file = join(t.dir, 'reloaded.yaml');
    writeFileSync(file, YAML.stringify(raw));
    expect(await t.broker.reload(file, {})).toMatchObject({ status: 'applied' });
  };
  const twoForDeploy = (raw: Record<string, any>) => (raw.scopes.find((s: { name: string }) => s.name === 'model:deploy').approvals = 2);
  const collect = (token: string, id: string) => t.http.post(`/v1/credentials/${id}/token`).set(bearer(token));

  it('holds a request already waiting to the running count: one approval no longer approves it, two do', async () => {
    const { body: pending } = await post(await t.as.ml(), deploy);
    expect(pending.approvals_required).toBe(1);
    await reloadWith(twoForDeploy);
    const first = await decide(await releaser('carol'), pending.request_id, 'approve', pending.digest);
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ status: 'pending_approval', approvals_required: 2 });
    expect((await t.http.get(`/v1/credentials/${pending.request_id}`).set(bearer(await t.as.ml()))).body.approvals_required).toBe(2);
    const second = await decide(await releaser('dave'), pending.request_id, 'approve', pending.digest);
    expect(second.body.status).toBe('approved');
    const collected = await collect(await t.as.ml(), pending.request_id);
    expect(collected.status).toBe(201);
    expect((decodeJwt(collected.body.access_token).approvers as { sub: string }[]).map((a) => a.sub)).toEqual(['carol', 'dave']);
  });

  it('denies at collection a request approved under the lower count: its approval no longer suffices', async () => {
    const { body: pending } = await post(await t.as.ml(), deploy);
    expect((await decide(await releaser('carol'), pending.request_id, 'approve', pending.digest)).body.status).toBe('approved');
    await reloadWith(twoForDeploy);
    const refused = await collect(await t.as.ml(), pending.request_id);
    expect(refused.status).toBe(409);
    expect(refused.body.detail).toMatch(/1 of the 2 approvals/);
    expect(await t.db.sql('SELECT request_id FROM issuances WHERE request_id = ?', [pending.request_id])).toEqual([]);
    expect((await eventsOf(t, pending.request_id)).at(-1)).toMatchObject({ type: 'request.denied', data: { reason: 'policy_changed' } });
  });

  it('never asks fewer than the request was made with: lowered since, it still needs its own count', async () => {
    const { body: pending } = await post(await dbWorkload(), dbAdmin);
    expect(pending.approvals_required).toBe(2);
    await reloadWith((raw) => (raw.scopes.find((s: { name: string }) => s.name === 'db:admin').approvals = 1));
    expect((await decide(await dba('frank'), pending.request_id, 'approve', pending.digest)).body).toMatchObject({ status: 'pending_approval', approvals_required: 2 });
  });
});
