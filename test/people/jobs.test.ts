import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { createTestIssuer, type TestIssuer } from '../helpers/issuer.js';
import { startReceiver } from '../helpers/receiver.js';

/**
 * CONTRACT section 1, "Jobs": every run on one branch has the same `sub`; `bindClaims` binds a
 * request to the run that made it, and to any other run it does not exist.
 */

const SUB = 'repo:acme/app:ref:refs/heads/main';
let t: TestBroker;
let gha: TestIssuer;
let receiver: Awaited<ReturnType<typeof startReceiver>>;
beforeEach(async () => {
  gha = await createTestIssuer('https://token.actions.test');
  receiver = await startReceiver();
  t = await startTestBroker({
    configure(config) {
      (config.identity as { issuers: unknown[] }).issuers.push({
        name: 'gha',
        kind: 'workload',
        issuer: gha.iss,
        jwks: gha.jwks,
        audiences: ['jit-broker'],
        algorithms: ['ES256'],
        initiatorClaim: 'actor',
        bindClaims: ['run_id', 'run_attempt'],
      });
      (config.policies as unknown[]).push({ id: 'gha-app', match: { issuer: 'gha', subject: 'repo:acme/app:*' }, scopes: ['artifacts:read', 'db:admin'] });
      config.notify = { webhooks: [{ url: receiver.url('/hook'), events: ['approval.requested'] }] };
    },
  });
});
afterEach(async () => {
  await t.close();
  await receiver.close();
});

/** A run of the job: GitHub sends run_id and run_attempt as strings. */
const run = (runId: string, attempt = '1', actor = 'mallory') =>
  gha.token(SUB, { actor, run_id: runId, run_attempt: attempt, repository: 'acme/app' }, { now: t.clock() });
const read = { task_id: 'build', scopes: ['artifacts:read'], audience: 'registry.acme.internal' };
const migrate = { task_id: 'migrate', scopes: ['db:admin'], audience: 'db.acme.internal' };
const post = async (token: string, payload: Record<string, unknown>) => t.http.post('/v1/credentials').set(bearer(token)).send(payload);
const approve = (token: string, id: string, digest: string) =>
  t.http.post(`/v1/credentials/${id}/approvals`).set(bearer(token)).send({ decision: 'approve', reason: 'ok', digest });

describe('a request bound to its run', () => {
  it('shows the run as bound_claims, values as in the token', async () => {
    const { body: pending } = await post(await run('9001', '2', 'bob'), migrate);
    const view = await t.http.get(`/v1/credentials/${pending.request_id}`).set(bearer(await run('9001', '2', 'bob')));
    expect(view.body).toMatchObject({ initiator: 'bob', bound_claims: { run_id: '9001', run_attempt: '2' } });
  });

  it('does not exist for another run of the same job: 404 on GET, collect, complete and revoke', async () => {
    const bobsRun = await run('9001', '1', 'bob');
    const { body: pending } = await post(bobsRun, migrate);
    const alice = await t.as.person('alice', ['approvers']);
    const carol = await t.as.person('carol', ['approvers']);
    await approve(alice, pending.request_id, pending.digest);
    expect((await approve(carol, pending.request_id, pending.digest)).body.status).toBe('approved');

    for (const other of [await run('9002', '1', 'mallory'), await run('9001', '2', 'bob')]) {
      const id = pending.request_id;
      expect((await t.http.get(`/v1/credentials/${id}`).set(bearer(other))).status).toBe(404);
      expect((await t.http.post(`/v1/credentials/${id}/token`).set(bearer(other))).status).toBe(404);
      expect((await t.http.post(`/v1/credentials/${id}/complete`).set(bearer(other))).status).toBe(404);
      expect((await t.http.post(`/v1/credentials/${id}/revoke`).set(bearer(other)).send({ reason: 'mine now' })).status).toBe(404);
      const exchanged = await t.http.post('/oauth2/token').type('form').send({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: other,
        subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
        request_id: id,
      });
      expect(exchanged.status).toBe(400);
      expect(exchanged.body).not.toHaveProperty('access_token');
    }
    // The run that asked collects it.
    const collected = await t.http.post(`/v1/credentials/${pending.request_id}/token`).set(bearer(bobsRun));
    expect(collected.status).toBe(201);

    // Nor may another run revoke the run's token as its holder (RFC 7009).
    const revoked = await t.http
      .post('/oauth2/revoke')
      .set(bearer(await run('9002')))
      .type('form')
      .send({ token: collected.body.access_token });
    expect(revoked.status).toBeGreaterThanOrEqual(400);
    const still = await t.http.get(`/v1/credentials/${pending.request_id}`).set(bearer(bobsRun));
    expect(still.body.status).toBe('issued');
  });

  it('lists only the run\'s own requests on GET /v1/credentials, newest first, with a status filter and pages', async () => {
    const first = await run('1');
    const ids: string[] = [];
    for (let i = 0; i < 3; i += 1) {
      t.clock.advance(1_000);
      ids.push((await post(first, { ...read, task_id: `build-${i}` })).body.request_id);
    }
    t.clock.advance(1_000);
    const pending = (await post(first, migrate)).body.request_id as string;
    await post(await run('2'), { ...read, task_id: 'other-run' });

    const all = await t.http.get('/v1/credentials').set(bearer(first));
    expect(all.status).toBe(200);
    expect(all.body.items.map((r: { request_id: string }) => r.request_id)).toEqual([pending, ...ids.reverse()]);
    expect(all.body.next_cursor).toBeNull();

    const onlyPending = await t.http.get('/v1/credentials?status=pending_approval').set(bearer(first));
    expect(onlyPending.body.items.map((r: { request_id: string }) => r.request_id)).toEqual([pending]);

    const page1 = await t.http.get('/v1/credentials?limit=2').set(bearer(first));
    const page2 = await t.http.get(`/v1/credentials?limit=2&cursor=${page1.body.next_cursor}`).set(bearer(first));
    expect([...page1.body.items, ...page2.body.items].map((r: { request_id: string }) => r.request_id)).toEqual(
      all.body.items.map((r: { request_id: string }) => r.request_id),
    );
    expect(page2.body.next_cursor).toBeNull();

    const expired = await t.http.get('/v1/credentials?status=expired').set(bearer(first));
    expect(expired.body.items).toEqual([]);
    t.clock.advance(16 * 60_000); // the tokens of 15 minutes have expired, not yet swept
    const sameRunLater = await run('1');
    const now = await t.http.get('/v1/credentials?status=expired').set(bearer(sameRunLater));
    expect(now.body.items).toHaveLength(3);
    expect((await t.http.get('/v1/credentials?status=issued').set(bearer(sameRunLater))).body.items).toEqual([]);

    expect((await t.http.get('/v1/credentials?status=lost').set(bearer(sameRunLater))).status).toBe(400);
  });

  it('shows the run to approvers, in the approvals listing and the webhook', async () => {
    const { body: pending } = await post(await run('77', '1', 'bob'), migrate);
    const listed = await t.http.get('/v1/approvals').set(bearer(await t.as.person('alice', ['approvers'])));
    expect(listed.body.items[0]).toMatchObject({ request_id: pending.request_id, initiator: 'bob', bound_claims: { run_id: '77', run_attempt: '1' } });
    await t.broker.notifier.idle();
    expect(receiver.deliveries[0]?.body).toMatchObject({ initiator: 'bob', bound_claims: { run_id: '77', run_attempt: '1' } });
  });

  it('binds the approval to the run: the digest an approver signs names it', async () => {
    const { body: a } = await post(await run('1'), migrate);
    const { body: b } = await post(await run('2'), migrate);
    expect(a.digest).not.toBe(b.digest);
    // An approval made on one run's digest does not count for the other's.
    expect((await approve(await t.as.person('alice', ['approvers']), b.request_id, a.digest)).status).toBe(409);
  });
});
