import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { calculateJwkThumbprint, decodeJwt, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { REFUSALS_RECORDED_PER_MINUTE } from '../../src/credentials/admission.js';
import { signDpopProof } from '../../src/dpop/index.js';
import { AGENTS_ISS, BROKER_ISSUER, bearer, model, startTestBroker, withAgents, withModelRelease, type TestBroker, type TestClock } from '../helpers/broker.js';
import { createTestIssuer, type TestIssuer } from '../helpers/issuer.js';
import { runCli } from '../helpers/cli.js';
import { allEvents, eventsOf } from '../helpers/records.js';
import { tempDir } from '../helpers/temp.js';
import { startServedBroker } from '../interop/served-broker.js';

/**
 * CONTRACT section 1, "Agents (delegation)": an agent presents the principal's token as
 * `subject_token` and its own as `actor_token`; a rule must allow that actor for that subject; the
 * token is the principal's, narrowed, naming the actor in `act`. Children of broker tokens are
 * narrower still, and revoking a grant revokes its whole line. Each test is an attacker's try.
 */

let agents: TestIssuer;
beforeAll(async () => {
  agents = await createTestIssuer(AGENTS_ISS);
});
let t: TestBroker;
afterEach(async () => {
  await t.close();
});

const start = (configure: (config: Record<string, any>) => void = () => {}) =>
  startTestBroker({
    configure(config) {
      withAgents(config, agents);
      configure(config);
    },
  });

/** Model release duties, with agents that may train (release agents) and deploy (helpers) for ML engineers. */
const withAgentsTrainingAndDeploying = (config: Record<string, any>) => {
  withModelRelease(config);
  config.delegation.rules[0].scopes.push('model:train');
  config.delegation.rules[2].scopes.push('model:deploy');
  config.policies.find((p: { id: string }) => p.id === 'ml-eng').scopes.push('model:train');
};
const JWT = 'urn:ietf:params:oauth:token-type:jwt';
const ACCESS = 'urn:ietf:params:oauth:token-type:access_token';
const registry = 'registry.acme.internal';
/** An agent's identity: `owner` is the person who launched it. */
const agent = (sub: string, owner = 'olivia', claims: Record<string, unknown> = {}) => agents.token(sub, { owner, ...claims }, { now: t.clock() });
const engineer = (sub = 'alice', claims: Record<string, unknown> = {}) => t.as.person(sub, ['ml-eng'], claims);
const exchange = async (fields: Record<string, string | undefined>) =>
  t.http
    .post('/oauth2/token')
    .type('form')
    .send(Object.fromEntries(Object.entries({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', ...fields }).filter(([, v]) => v !== undefined)));
/** The agent asks for `scope` on the engineer's behalf. */
const delegate = async (subject: string, actor: string, extra: Record<string, string | undefined> = {}) =>
  exchange({ subject_token: subject, subject_token_type: JWT, actor_token: actor, actor_token_type: JWT, scope: 'artifacts:read', audience: registry, task_id: 'assist', ...extra });
const childOf = async (parent: string, extra: Record<string, string | undefined> = {}) => exchange({ subject_token: parent, subject_token_type: ACCESS, ...extra });
const expectOAuth = (response: { status: number; body: { error?: string; error_description?: string } }, error: string, description?: RegExp) => {
  expect(response.status, JSON.stringify(response.body)).toBe(400);
  expect(response.body.error).toBe(error);
  if (description) expect(response.body.error_description).toMatch(description);
};
const introspect = async (token: string) =>
  (await t.http.post('/oauth2/introspect').set(bearer(await t.as.pipeline({}, 'resource-server:registry'))).type('form').send({ token })).body;

describe('a delegated exchange', () => {
  it('gives the principal\'s token, narrowed to the rule and capped by its maxTtl, naming the actor in act', async () => {
    t = await start();
    const response = await delegate(await engineer(), await agent('agent:release-1'), { ttl_seconds: '3600' });
    expect(response.status).toBe(200);
    expect(response.body.expires_in).toBe(300); // the rule's maxTtl
    const claims = decodeJwt(response.body.access_token);
    expect(claims).toMatchObject({ sub: 'alice', client_id: 'sso', idp: 'sso', scope: 'artifacts:read', act: { iss: AGENTS_ISS, sub: 'agent:release-1' } });
    const events = await eventsOf(t, response.body.request_id);
    expect(events.find((e) => e.type === 'request.created')?.data).toMatchObject({ act: { iss: AGENTS_ISS, sub: 'agent:release-1' }, delegation_rule: 'release-agent' });
    // CONTRACT section 5: the token.issued event holds act as the token does.
    expect(events.find((e) => e.type === 'token.issued')?.data.act).toEqual(claims.act);
  });

  it.each([
    ['an actor outside every rule', () => agent('agent:rogue-1'), () => engineer(), /No delegation rule lets agent:rogue-1/],
    ['a subject outside the rule\'s for', () => agent('agent:release-1'), () => t.as.person('bob', ['on-call']), /No delegation rule lets agent:release-1 .* act for bob/],
    ['a subject token whose may_act names another actor', () => agent('agent:release-1'), () => engineer('alice', { may_act: { sub: 'agent:release-2' } }), /may_act/],
    ['a may_act naming the actor at another issuer', () => agent('agent:release-1'), () => engineer('alice', { may_act: { sub: 'agent:release-1', iss: 'https://elsewhere.test' } }), /may_act/],
  ])('refuses %s: invalid_request', async (_what, actor, subject, why) => {
    t = await start();
    expectOAuth(await delegate(await subject(), await actor()), 'invalid_request', why);
    expect(await t.db.sql('SELECT id FROM requests')).toEqual([]);
  });

  it('refuses an identity token that already names an actor, as a subject, as an actor and as a caller: the actor would act past every rule, unrecorded', async () => {
    t = await start();
    const actedFor = await engineer('alice', { act: { sub: 'agent:rogue-1', iss: AGENTS_ISS } });
    const plain = await exchange({ subject_token: actedFor, subject_token_type: JWT, scope: 'artifacts:read', audience: registry, task_id: 'assist' });
    expectOAuth(plain, 'invalid_request');
    expectOAuth(await delegate(await engineer(), await agent('agent:release-1', 'olivia', { act: { sub: 'agent:rogue-1' } })), 'invalid_request');
    const asCaller = await t.http.post('/v1/credentials').set(bearer(actedFor)).send({ task_id: 'assist', scopes: ['artifacts:read'], audience: registry });
    expect(asCaller.status).toBe(401);
    expect(JSON.stringify([plain.body, asCaller.body])).not.toMatch(/access_token"/);
    // The same tokens without `act` are what the broker takes.
    expect((await delegate(await engineer(), await agent('agent:release-1'))).status).toBe(200);
  });

  it('honours a may_act naming this actor', async () => {
    t = await start();
    const response = await delegate(await engineer('alice', { may_act: { sub: 'agent:release-1', iss: AGENTS_ISS } }), await agent('agent:release-1'));
    expect(response.status).toBe(200);
  });

  it('refuses a forged, an expired and a missing-typed actor token', async () => {
    t = await start();
    const { privateKey } = await generateKeyPair('ES256');
    const forged = await agents.token('agent:release-1', { owner: 'olivia' }, { now: t.clock(), key: privateKey });
    expectOAuth(await delegate(await engineer(), forged), 'invalid_request', /actor_token was not accepted/);
    const expired = await agents.token('agent:release-1', { owner: 'olivia' }, { now: t.clock() - 3_600_000 });
    expectOAuth(await delegate(await engineer(), expired), 'invalid_request', /actor_token was not accepted/);
    expectOAuth(await delegate(await engineer(), await agent('agent:release-1'), { actor_token_type: undefined }), 'invalid_request', /actor_token_type/);
  });

  it('refuses a scope the rule does not list, and one the subject\'s own policies do not grant: invalid_scope naming them', async () => {
    t = await start();
    expectOAuth(await delegate(await engineer(), await agent('agent:release-1'), { scope: 'db:admin' }), 'invalid_scope', /db:admin.*"release-agent".*do not list/);
    // logs:read: the rule lists it, alice is not on call.
    expectOAuth(await delegate(await engineer(), await agent('agent:release-1'), { scope: 'logs:read' }), 'invalid_scope', /logs:read.*no policy grants/);
    // And the refusal is recorded for the principal, naming the agent that asked.
    const refused = await t.db.sql<{ actor_sub: string; data: string }>(`SELECT actor_sub, data FROM audit_events WHERE type = 'request.refused' ORDER BY seq`);
    expect(refused.map((row) => [row.actor_sub, JSON.parse(row.data).act])).toEqual([
      ['alice', { iss: AGENTS_ISS, sub: 'agent:release-1' }],
      ['alice', { iss: AGENTS_ISS, sub: 'agent:release-1' }],
    ]);
    // A refusal after the facts are read (over a limit) names it too.
    await t.restart((config) => (config.limits = { liveGrants: 1 }));
    expect((await delegate(await engineer(), await agent('agent:release-2'))).status).toBe(200);
    expect((await delegate(await engineer(), await agent('agent:release-3'))).status).toBe(429);
    const [limited] = await t.db.sql<{ data: string }>(`SELECT data FROM audit_events WHERE type = 'request.refused' ORDER BY seq DESC LIMIT 1`);
    expect(JSON.parse(String(limited?.data)).act).toEqual({ iss: AGENTS_ISS, sub: 'agent:release-3' });
  });

  it('records an agent\'s refusals one by one only a few a minute, whomever it acts for; the rest are counted into one event', async () => {
    t = await start();
    t.clock.set(Math.ceil((t.clock() + 2_000) / 60_000) * 60_000 + 1_000); // early in a minute
    const refusals = 12;
    for (let i = 0; i < refusals; i += 1) {
      expectOAuth(await delegate(await engineer(`eng-${i}`), await agent('agent:release-1'), { scope: 'db:admin' }), 'invalid_scope');
    }
    const recorded = async () => (await allEvents(t)).filter((e) => e.type === 'request.refused');
    expect(await recorded()).toHaveLength(REFUSALS_RECORDED_PER_MINUTE);
    t.clock.advance(2 * 60_000); // the minute over, and closed for every replica
    await t.broker.scheduler.runAll();
    const events = await recorded();
    expect(events.reduce((sum, e) => sum + Number(e.data.count), 0)).toBe(refusals);
    // One event for the rest, naming the agent that asked: not one per principal it acted for.
    expect(events.slice(REFUSALS_RECORDED_PER_MINUTE)).toEqual([
      expect.objectContaining({ actor: { iss: AGENTS_ISS, sub: 'agent:release-1' }, data: expect.objectContaining({ aggregated: true, count: refusals - REFUSALS_RECORDED_PER_MINUTE }) }),
    ]);
  });

  it('counts limits for the agent too: one agent cannot exceed its own rate by acting for many people', async () => {
    t = await start((config) => (config.limits = { requestsPerMinute: 3 }));
    for (const person of ['alice', 'carol', 'erin']) expect((await delegate(await engineer(person), await agent('agent:release-1'))).status).toBe(200);
    const over = await delegate(await engineer('frank'), await agent('agent:release-1'));
    expect(over.status).toBe(429);
    expect(over.body).toMatchObject({ error: 'slow_down', error_description: expect.stringMatching(/per actor's identity/) });
    // frank himself still may.
    expect((await exchange({ subject_token: await engineer('frank'), subject_token_type: JWT, scope: 'artifacts:read', audience: registry, task_id: 'x' })).status).toBe(200);
  });

  it('counts for the agent, and for the person who launched it, only while it lives: one past its end holds no place, marked or not', async () => {
    t = await start((config) => {
      config.limits = { liveGrants: 1 };
      config.scheduler = { interval: '60m' }; // no sweep for an hour
    });
    const olivia = async () => (await t.http.post('/v1/credentials').set(bearer(await t.as.person('olivia', ['ml-eng']))).send({ task_id: 'own', scopes: ['artifacts:read'], audience: registry })) as { status: number; headers: Record<string, string> };
    // olivia's agent holds a grant for alice for a minute: its one place, and olivia's.
    expect((await delegate(await engineer('alice'), await agent('agent:release-1'), { ttl_seconds: '60' })).status).toBe(200);
    t.clock.advance(20_000);
    const agentHeld = await delegate(await engineer('bob'), await agent('agent:release-1', 'owen'));
    expect(agentHeld.status).toBe(429);
    expect(agentHeld.body.error_description).toMatch(/per actor's identity/);
    const oliviaHeld = await olivia();
    expect(oliviaHeld.status).toBe(429);
    // Each told when the grant in its way ends.
    expect([agentHeld.headers['retry-after'], oliviaHeld.headers['retry-after']]).toEqual(['40', '40']);

    // A database from before grants were kept by their ends: the migration finds them.
    await t.db.sql('DROP TABLE live_holders');
    await t.db.sql("DELETE FROM schema_migrations WHERE name LIKE '%live_holders%'");
    await t.restart();
    t.clock.advance(41_000); // it ended; the scheduler has not marked it
    expect((await olivia()).status).toBe(201);
    expect((await delegate(await engineer('bob'), await agent('agent:release-1', 'owen'))).status).toBe(200);
  });

  it('counts for the agent by its end as it is now: approved and not collected in time, or collected and past its token\'s exp', async () => {
    t = await start((config) => (config.limits = { liveGrants: 1, pendingRequests: 1 }));
    const approve = async (id: string) => {
      const carol = await t.as.person('carol', ['approvers', 'ml-release']);
      const { digest } = (await t.http.get(`/v1/credentials/${id}`).set(bearer(carol))).body;
      expect((await t.http.post(`/v1/credentials/${id}/approvals`).set(bearer(carol)).send({ decision: 'approve', reason: 'ok', digest })).body.status).toBe('approved');
    };
    const deploy = async () => {
      const asked = await delegate(await engineer('alice'), await agent('agent:release-1'), { scope: 'model:deploy' });
      expectOAuth(asked, 'authorization_pending');
      return asked.body.request_id as string;
    };
    const forBob = async () => (await delegate(await engineer('bob'), await agent('agent:release-1'))).status;

    const uncollected = await deploy();
    // Awaiting approval, it holds the agent's one pending place: another wait is refused.
    expect((await delegate(await engineer('erin'), await agent('agent:release-1'), { scope: 'model:deploy' })).status).toBe(429);
    await approve(uncollected);
    expect(await forBob()).toBe(429);
    t.clock.advance(16 * 60_000); // past collectWithin (15m), long before the hour it had to wait for approval
    expect(await forBob()).toBe(200);

    t.clock.advance(6 * 60_000); // bob's grant ended (the rule's 5m)
    const collected = await deploy();
    await approve(collected);
    const token = await exchange({ subject_token: await engineer('alice'), subject_token_type: JWT, actor_token: await agent('agent:release-1'), actor_token_type: JWT, request_id: collected });
    expect(token.body.expires_in).toBe(300);
    expect(await forBob()).toBe(429);
    t.clock.advance(301_000); // past its token's exp, long before collectWithin
    expect(await forBob()).toBe(200);
  });

  it('lets the subject and the actor see, complete and revoke it; nobody else', async () => {
    t = await start();
    const { body } = await delegate(await engineer(), await agent('agent:release-1'));
    for (const viewer of [await engineer(), await agent('agent:release-1')]) {
      const view = await t.http.get(`/v1/credentials/${body.request_id}`).set(bearer(viewer));
      expect(view.status).toBe(200);
      expect(view.body.act).toEqual({ iss: AGENTS_ISS, sub: 'agent:release-1' });
    }
    expect((await t.http.get(`/v1/credentials/${body.request_id}`).set(bearer(await agent('agent:release-2')))).status).toBe(404);
    expect((await t.http.post(`/v1/credentials/${body.request_id}/complete`).set(bearer(await agent('agent:release-1')))).body.status).toBe('revoked');
  });

  it('is listed on GET /v1/credentials to its subject and its actor, newest first among their own, by status; to nobody else', async () => {
    t = await start();
    const list = async (token: string, query = '') => {
      const items: { request_id: string; status: string }[] = [];
      for (let cursor: string | null = null, pages = 0; pages === 0 || cursor; pages++) {
        const page: any = await t.http.get(`/v1/credentials?limit=1${query}${cursor ? `&cursor=${cursor}` : ''}`).set(bearer(token));
        expect(page.status, JSON.stringify(page.body)).toBe(200);
        items.push(...page.body.items);
        cursor = page.body.next_cursor;
      }
      return items;
    };
    const ask = async (token: string) => (await t.http.post('/v1/credentials').set(bearer(token)).send({ task_id: 'own', scopes: ['artifacts:read'], audience: registry, ttl_seconds: 60 })).body.request_id as string;
    const own = await ask(await engineer());
    t.clock.advance(1_000);
    const first = (await delegate(await engineer(), await agent('agent:release-1'))).body.request_id as string;
    t.clock.advance(1_000);
    const later = await ask(await engineer());
    t.clock.advance(1_000);
    const second = (await delegate(await engineer(), await agent('agent:release-1'))).body.request_id as string;
    expect((await t.http.post(`/v1/credentials/${first}/revoke`).set(bearer(await engineer())).send({ reason: 'done early' })).status).toBe(200);

    expect((await list(await engineer())).map((r) => r.request_id)).toEqual([second, later, first, own]);
    expect((await list(await agent('agent:release-1'))).map((r) => r.request_id)).toEqual([second, first]);
    expect((await list(await agent('agent:release-1'), '&status=revoked')).map((r) => r.request_id)).toEqual([first]);
    expect((await list(await agent('agent:release-1'), '&status=issued')).map((r) => r.request_id)).toEqual([second]);
    // Another agent; the same subject at another issuer.
    expect(await list(await agent('agent:release-2'))).toEqual([]);
    expect(await list(await t.as.person('agent:release-1', ['ml-eng']))).toEqual([]);

    // Requests recorded before actors were kept with their times: the migration dates them.
    await t.db.sql('DROP INDEX request_actors_by_time');
    await t.db.sql('ALTER TABLE request_actors DROP COLUMN created_at');
    await t.db.sql("DELETE FROM schema_migrations WHERE name LIKE '%request_actors_by_time%'");
    await t.restart();
    expect((await list(await agent('agent:release-1'))).map((r) => r.request_id)).toEqual([second, first]);
  });

  it('is listed to the actor\'s own run only, where its issuer binds jobs', async () => {
    t = await start((config) => (config.identity.issuers.find((i: { name: string }) => i.name === 'agents').bindClaims = ['run_id']));
    const run = (id: string) => agent('agent:release-1', 'olivia', { run_id: id });
    const asked = (await delegate(await engineer(), await run('run-1'))).body.request_id as string;
    const ids = async (token: string) => (await t.http.get('/v1/credentials').set(bearer(token))).body.items.map((r: { request_id: string }) => r.request_id);
    expect(await ids(await run('run-1'))).toEqual([asked]);
    expect(await ids(await run('run-2'))).toEqual([]);
  });
});

describe('a delegated request that needs approval', () => {
  it('shows who acts for whom to approvers, bars the subject, the agent\'s launcher and the agent, and is collected with both tokens', async () => {
    t = await start();
    const asked = await delegate(await engineer(), await agent('agent:release-1', 'dave'), { scope: 'model:deploy', task_id: 'release 7' });
    expectOAuth(asked, 'authorization_pending');
    const id = asked.body.request_id as string;
    const carol = await t.as.person('carol', ['approvers', 'ml-release']);
    const listed = await t.http.get('/v1/approvals').set(bearer(carol));
    expect(listed.body.items).toEqual([expect.objectContaining({ request_id: id, act: { iss: AGENTS_ISS, sub: 'agent:release-1' } })]);
    const view = (await t.http.get(`/v1/credentials/${id}`).set(bearer(carol))).body;

    // alice (the subject, as an approver), dave (who launched the agent): requesters both.
    for (const barred of [await t.as.person('alice', ['approvers', 'ml-release']), await t.as.person('dave', ['approvers', 'ml-release'])]) {
      const refused = await t.http.post(`/v1/credentials/${id}/approvals`).set(bearer(barred)).send({ decision: 'approve', reason: 'ok', digest: view.digest });
      expect(refused.status).toBe(403);
    }
    expect((await t.http.post(`/v1/credentials/${id}/approvals`).set(bearer(carol)).send({ decision: 'approve', reason: 'ok', digest: view.digest })).status).toBe(200);

    // Not at /v1: delegation happens at the token endpoint only.
    expect((await t.http.post(`/v1/credentials/${id}/token`).set(bearer(await engineer()))).status).toBe(409);
    expect((await t.http.post(`/v1/credentials/${id}/token`).set(bearer(await agent('agent:release-1', 'dave')))).status).toBe(409);
    // Another actor, or none, does not collect it.
    expectOAuth(await exchange({ subject_token: await engineer(), subject_token_type: JWT, actor_token: await agent('agent:release-2'), actor_token_type: JWT, request_id: id }), 'invalid_request');
    expectOAuth(await exchange({ subject_token: await engineer(), subject_token_type: JWT, request_id: id }), 'invalid_request');
    const collected = await exchange({ subject_token: await engineer(), subject_token_type: JWT, actor_token: await agent('agent:release-1', 'dave'), actor_token_type: JWT, request_id: id });
    expect(collected.status).toBe(200);
    expect(decodeJwt(collected.body.access_token)).toMatchObject({ sub: 'alice', act: { sub: 'agent:release-1' }, approvers: [expect.objectContaining({ sub: 'carol' })] });
  });

  it('is polled and collected only by the actor\'s own run where its issuer binds jobs: another run is 404 there as everywhere', async () => {
    t = await start((config) => (config.identity.issuers.find((i: { name: string }) => i.name === 'agents').bindClaims = ['run_id']));
    const run = (id: string) => agent('agent:release-1', 'olivia', { run_id: id });
    const asked = await delegate(await engineer(), await run('run-1'), { scope: 'model:deploy', task_id: 'release 7' });
    expectOAuth(asked, 'authorization_pending');
    const id = asked.body.request_id as string;
    // While it waits, its state is told to the run that asked, and to no other.
    const poll = async (runId: string) => exchange({ subject_token: await engineer(), subject_token_type: JWT, actor_token: await run(runId), actor_token_type: JWT, request_id: id });
    expectOAuth(await poll('run-2'), 'invalid_request', new RegExp(`No request ${id} that you may see`));
    expectOAuth(await poll('run-1'), 'authorization_pending');
    const carol = await t.as.person('carol', ['approvers', 'ml-release']);
    const view = (await t.http.get(`/v1/credentials/${id}`).set(bearer(carol))).body;
    expect((await t.http.post(`/v1/credentials/${id}/approvals`).set(bearer(carol)).send({ decision: 'approve', reason: 'ok', digest: view.digest })).status).toBe(200);

    expect((await t.http.get(`/v1/credentials/${id}`).set(bearer(await run('run-2')))).status).toBe(404);
    const other = await exchange({ subject_token: await engineer(), subject_token_type: JWT, actor_token: await run('run-2'), actor_token_type: JWT, request_id: id });
    expectOAuth(other, 'invalid_request', new RegExp(`No request ${id} that you may see`));
    const collected = await exchange({ subject_token: await engineer(), subject_token_type: JWT, actor_token: await run('run-1'), actor_token_type: JWT, request_id: id });
    expect(collected.status).toBe(200);
  });

  it('is neither polled nor collected with a fresh subject token whose may_act names another actor', async () => {
    t = await start();
    const asked = await delegate(await engineer(), await agent('agent:release-1'), { scope: 'model:deploy', task_id: 'release 7' });
    const id = asked.body.request_id as string;
    const collect = async (subject: string) => exchange({ subject_token: subject, subject_token_type: JWT, actor_token: await agent('agent:release-1'), actor_token_type: JWT, request_id: id });
    // Nor is its wait told to it.
    expectOAuth(await collect(await engineer('alice', { may_act: { sub: 'agent:release-2' } })), 'invalid_request', /may_act/);
    const carol = await t.as.person('carol', ['approvers', 'ml-release']);
    const view = (await t.http.get(`/v1/credentials/${id}`).set(bearer(carol))).body;
    expect((await t.http.post(`/v1/credentials/${id}/approvals`).set(bearer(carol)).send({ decision: 'approve', reason: 'ok', digest: view.digest })).status).toBe(200);

    expectOAuth(await collect(await engineer('alice', { may_act: { sub: 'agent:release-2' } })), 'invalid_request', /may_act/);
    expectOAuth(await collect(await engineer('alice', { may_act: { sub: 'agent:release-1', iss: 'https://elsewhere.test' } })), 'invalid_request', /may_act/);
    expect((await t.http.get(`/v1/credentials/${id}`).set(bearer(carol))).body.status).toBe('approved');
    expect((await collect(await engineer('alice', { may_act: { sub: 'agent:release-1', iss: AGENTS_ISS } }))).status).toBe(200);
  });

  it('asked with a DPoP proof, is collected only with a proof by the same key, and the token bound to it', async () => {
    t = await start();
    const holderKey = async () => {
      const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
      const publicJwk = await exportJWK(publicKey);
      return { alg: 'ES256' as const, privateKey, publicJwk, jkt: await calculateJwkThumbprint(publicJwk) };
    };
    const [agentKey, otherKey] = [await holderKey(), await holderKey()];
    const proof = (key: typeof agentKey) => signDpopProof(key, { method: 'POST', url: `${BROKER_ISSUER}/oauth2/token`, now: t.clock() });
    const exchangeWith = async (fields: Record<string, string>, dpop?: string) => {
      const post = t.http.post('/oauth2/token').type('form');
      return (dpop ? post.set('DPoP', dpop) : post).send({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token_type: JWT, actor_token_type: JWT, ...fields });
    };
    const asked = await exchangeWith(
      { subject_token: await engineer(), actor_token: await agent('agent:release-1'), scope: 'model:deploy', audience: registry, task_id: 'release 7' },
      await proof(agentKey),
    );
    expectOAuth(asked, 'authorization_pending');
    const id = asked.body.request_id as string;
    const carol = await t.as.person('carol', ['approvers', 'ml-release']);
    const view = (await t.http.get(`/v1/credentials/${id}`).set(bearer(carol))).body;
    expect((await t.http.post(`/v1/credentials/${id}/approvals`).set(bearer(carol)).send({ decision: 'approve', reason: 'ok', digest: view.digest })).status).toBe(200);

    const collect = async (dpop?: string) => exchangeWith({ subject_token: await engineer(), actor_token: await agent('agent:release-1'), request_id: id }, dpop);
    expectOAuth(await collect(), 'invalid_dpop_proof');
    expectOAuth(await collect(await proof(otherKey)), 'invalid_dpop_proof');
    const collected = await collect(await proof(agentKey));
    expect(collected.status).toBe(200);
    expect(collected.body.token_type).toBe('DPoP');
    expect(decodeJwt(collected.body.access_token)).toMatchObject({ cnf: { jkt: agentKey.jkt }, act: { sub: 'agent:release-1' } });
  });

  it('breaks glass for the principal: the quota counts for the subject, whichever agent asks, and needs the subject\'s right to break glass', async () => {
    t = await start((config) => (config.breakGlass.maxPerIdentityPerDay = 1));
    const onCall = (sub: string) => t.as.person(sub, ['ml-eng', 'on-call']);
    const breakGlass = { scope: 'logs:read', break_glass: 'true', justification: 'production incident 4711 needs logs' };
    const first = await delegate(await onCall('alice'), await agent('agent:release-1'), breakGlass);
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(decodeJwt(first.body.access_token)).toMatchObject({ sub: 'alice', break_glass: true, act: { sub: 'agent:release-1' } });
    // alice's quota is spent, through another agent too; the same agent may still break glass for bob.
    const again = await delegate(await onCall('alice'), await agent('agent:release-2'), breakGlass);
    expect(again.status).toBe(429);
    expect(again.body.error).toBe('slow_down');
    expect((await delegate(await onCall('bob'), await agent('agent:release-1'), breakGlass)).status).toBe(200);
    // carl is not on call: no agent breaks glass for him.
    expectOAuth(await delegate(await engineer('carl'), await agent('agent:release-1'), breakGlass), 'invalid_scope');
  });

  it('bars from reviewing a break-glass grant whoever acted with a token made from it, even one already ended', async () => {
    t = await start();
    const justification = 'production incident 4711 needs logs';
    const root = await t.http.post('/v1/credentials').set(bearer(await t.as.person('alice', ['ml-eng', 'on-call']))).send({ task_id: 'inc', scopes: ['logs:read'], audience: 'logs', break_glass: true, justification });
    expect(root.status, JSON.stringify(root.body)).toBe(201);
    // rita's agent works with a child of alice's grant; the child ends before the review.
    const child = await childOf(root.body.access_token, { actor_token: await agent('agent:release-1', 'rita'), actor_token_type: JWT, ttl_seconds: '10' });
    expect(child.status, JSON.stringify(child.body)).toBe(200);
    t.clock.advance(11_000);
    await t.broker.scheduler.runAll(); // the child is marked expired
    const review = (token: string) => t.http.post(`/v1/credentials/${root.body.request_id}/review`).set(bearer(token)).send({ outcome: 'justified', notes: 'fine by me' });
    const refused = await review(await t.as.person('rita', ['approvers']));
    expect(refused.status).toBe(403);
    expect(refused.body.detail).toMatch(/actor of the delegated request cannot review/);
    expect((await review(await t.as.person('carol', ['approvers']))).status).toBe(200);
  });

  it('makes every actor take part in duties: the agent that trained a model for one person may not deploy it for another', async () => {
    t = await start((config) => {
      withModelRelease(config);
      config.delegation.rules[0].scopes.push('model:train');
      config.policies.find((p: { id: string }) => p.id === 'ml-eng').scopes.push('model:train');
    });
    const details = JSON.stringify(model('fraud-v1'));
    expect((await delegate(await engineer('alice'), await agent('agent:release-1'), { scope: 'model:train', authorization_details: details })).status).toBe(200);
    const refused = await delegate(await engineer('erin'), await agent('agent:release-1', 'owen'), { scope: 'model:deploy', authorization_details: details });
    expectOAuth(refused, 'invalid_scope', /Duty "model-release".*step "train"/);
    // alice herself trained it too, through her agent.
    const self = await t.http.post('/v1/credentials').set(bearer(await engineer('alice'))).send({ task_id: 'd', scopes: ['model:deploy'], audience: registry, authorization_details: model('fraud-v1') });
    expect(self.status).toBe(403);
  });
});

describe('child tokens', () => {
  it('of a parent that named no object, issued before a duty covered its scopes, are judged on their own scopes', async () => {
    t = await start((config) => {
      config.delegation.rules[0].scopes.push('model:train');
      config.policies.find((p: { id: string }) => p.id === 'ml-eng').scopes.push('model:train');
      config.separation = [];
    });
    const parent = await delegate(await engineer(), await agent('agent:release-1'), { scope: 'artifacts:read model:train' });
    expect(parent.status).toBe(200);
    await t.restart((config: Record<string, any>) => withModelRelease(config));
    // It has no object to name (a child adds none), and keeps no step scope: issued.
    expect((await childOf(parent.body.access_token, { scope: 'artifacts:read' })).status).toBe(200);
    // Keeping the step scope, it is a step with no object: refused, as any request would be.
    expectOAuth(await childOf(parent.body.access_token), 'invalid_authorization_details');
  });

  const parentFor = async (extra: Record<string, string | undefined> = {}) => (await delegate(await engineer(), await agent('agent:release-1'), { scope: 'artifacts:read model:deploy', ...extra }));

  it('are narrower than their parent: fewer scopes, its audience, no later exp, its details; no approval', async () => {
    t = await start((config) => config.scopes.find((s: { name: string }) => s.name === 'model:deploy').approvals = 1);
    const parent = await delegate(await engineer(), await agent('agent:release-1'));
    expect(parent.status).toBe(200);
    const parentExp = decodeJwt(parent.body.access_token).exp as number;
    t.clock.advance(60_000);
    const child = await childOf(parent.body.access_token, { ttl_seconds: '100000' });
    expect(child.status).toBe(200);
    const claims = decodeJwt(child.body.access_token);
    expect(claims).toMatchObject({ sub: 'alice', aud: registry, scope: 'artifacts:read', act: { sub: 'agent:release-1' }, task_id: 'assist' });
    expect(claims.exp).toBeLessThanOrEqual(parentExp);
    expect((await eventsOf(t, child.body.request_id)).find((e) => e.type === 'token.issued')?.data).toMatchObject({ parent_jti: decodeJwt(parent.body.access_token).jti });

    expectOAuth(await childOf(parent.body.access_token, { scope: 'artifacts:read model:deploy' }), 'invalid_scope', /model:deploy.*only scopes of its parent/);
    expectOAuth(await childOf(parent.body.access_token, { audience: 'db.acme.internal' }), 'invalid_target');
    expectOAuth(await childOf(parent.body.access_token, { authorization_details: JSON.stringify(model('x')) }), 'invalid_authorization_details');
  });

  it('name the approvers of the grant they narrow, in the token, its event and the auditor\'s row: its approval is theirs', async () => {
    t = await start();
    const asked = await delegate(await engineer(), await agent('agent:release-1'), { scope: 'artifacts:read model:deploy', task_id: 'release 7' });
    expectOAuth(asked, 'authorization_pending');
    const id = asked.body.request_id as string;
    const carol = await t.as.person('carol', ['approvers', 'ml-release']);
    const view = (await t.http.get(`/v1/credentials/${id}`).set(bearer(carol))).body;
    expect((await t.http.post(`/v1/credentials/${id}/approvals`).set(bearer(carol)).send({ decision: 'approve', reason: 'ok', digest: view.digest })).status).toBe(200);
    const root = await exchange({ subject_token: await engineer(), subject_token_type: JWT, actor_token: await agent('agent:release-1'), actor_token_type: JWT, request_id: id });
    expect(root.status).toBe(200);
    const approvers = decodeJwt(root.body.access_token).approvers;
    expect(approvers).toEqual([expect.objectContaining({ sub: 'carol' })]);

    // A child, and its child: each names carol, as its root's token does.
    const child = await childOf(root.body.access_token, { scope: 'model:deploy' });
    expect(child.status, JSON.stringify(child.body)).toBe(200);
    const grandchild = await childOf(child.body.access_token, { task_id: 'release 7, step 2' });
    expect(grandchild.status, JSON.stringify(grandchild.body)).toBe(200);
    const ivy = await t.as.person('ivy', ['auditors']);
    const rows = (await t.http.get('/v1/audit/issuances?scope=model:deploy').set(bearer(ivy))).body.items as { request_id: string; approvers: unknown }[];
    expect(rows).toHaveLength(3);
    for (const issued of [child, grandchild]) {
      expect(decodeJwt(issued.body.access_token).approvers).toEqual(approvers);
      expect((await eventsOf(t, issued.body.request_id)).find((e) => e.type === 'token.issued')?.data.approvers).toEqual(approvers);
      expect(rows.find((row) => row.request_id === issued.body.request_id)?.approvers).toEqual(approvers);
    }
    // A child of a grant nobody approved names nobody.
    const plain = await delegate(await engineer(), await agent('agent:release-1'));
    const unapproved = await childOf(plain.body.access_token);
    expect(unapproved.status).toBe(200);
    expect(decodeJwt(unapproved.body.access_token).approvers).toBeUndefined();
  });

  it('never outlive their parent, however far the clock moves while one is made: exp and expires_at no later than the parent\'s', async () => {
    // On whole seconds, moving a second at each read while the child is made: its remaining life
    // is counted at one read, its token minted at a later one.
    let now = Math.floor(Date.now() / 1000) * 1000;
    let step = 0;
    const clock: TestClock = Object.assign(() => (now += step), { advance: (ms: number) => void (now += ms), set: (ms: number) => void (now = ms) });
    t = await startTestBroker({ clock, configure: (config) => withAgents(config, agents) });
    const parent = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ task_id: 'build', scopes: ['artifacts:read'], audience: registry, ttl_seconds: 120 });
    expect(parent.status).toBe(201);
    clock.advance(10_000);
    step = 1_000;
    const child = await childOf(parent.body.access_token);
    step = 0;
    expect(child.status).toBe(200);
    const claims = decodeJwt(child.body.access_token);
    expect(claims.exp).toBeLessThanOrEqual(decodeJwt(parent.body.access_token).exp as number);
    expect(child.body.expires_in).toBe((claims.exp as number) - (claims.iat as number));
    const view = await t.http.get(`/v1/credentials/${child.body.request_id}`).set(bearer(await t.as.pipeline()));
    expect(Date.parse(view.body.expires_at)).toBeLessThanOrEqual(Date.parse(parent.body.expires_at));
  });

  it('add a new actor in front of the chain, allowed by a rule for the root subject, up to maxDepth', async () => {
    t = await start();
    const parent = await delegate(await engineer(), await agent('agent:release-1'));
    const sub = await childOf(parent.body.access_token, { actor_token: await agent('agent:helper-1'), actor_token_type: JWT });
    expect(sub.status).toBe(200);
    expect(decodeJwt(sub.body.access_token).act).toEqual({ iss: AGENTS_ISS, sub: 'agent:helper-1', act: { iss: AGENTS_ISS, sub: 'agent:release-1' } });
    // A third actor: past delegation.maxDepth (2).
    expectOAuth(await childOf(sub.body.access_token, { actor_token: await agent('agent:helper-2'), actor_token_type: JWT }), 'invalid_request', /longer than delegation.maxDepth/);
    // An actor no rule allows for the root subject.
    expectOAuth(await childOf(parent.body.access_token, { actor_token: await agent('agent:coder-1'), actor_token_type: JWT }), 'invalid_request', /No delegation rule/);
    // Without a new actor the chain stays.
    const same = await childOf(sub.body.access_token);
    expect(decodeJwt(same.body.access_token).act).toEqual(decodeJwt(sub.body.access_token).act);
  });

  it('need a live parent of this broker: not revoked, not expired, not foreign', async () => {
    t = await start();
    const parent = await delegate(await engineer(), await agent('agent:release-1'));
    const { privateKey } = await generateKeyPair('ES256');
    const foreign = await new SignJWT({ ...decodeJwt(parent.body.access_token) }).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'x' }).sign(privateKey);
    expectOAuth(await childOf(foreign), 'invalid_request', /not a live access token of this broker/);
    expectOAuth(await childOf(await engineer()), 'invalid_request'); // an identity token is no broker token
    await t.http.post(`/v1/credentials/${parent.body.request_id}/revoke`).set(bearer(await engineer())).send({ reason: 'done' });
    expectOAuth(await childOf(parent.body.access_token), 'invalid_request', /not a live access token|revoked/);
    const short = await delegate(await engineer(), await agent('agent:release-1'), { ttl_seconds: '60' });
    t.clock.advance(61_000);
    expectOAuth(await childOf(short.body.access_token), 'invalid_request');
  });

  it('of a plain token, for its holder: judged on the root subject under the running configuration', async () => {
    t = await start();
    const job = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ task_id: 'build', scopes: ['artifacts:read', 'logs:read'], audience: registry });
    const child = await childOf(job.body.access_token, { scope: 'artifacts:read' });
    expect(child.status).toBe(200);
    expect(decodeJwt(child.body.access_token)).toMatchObject({ sub: 'repo:acme/app:ref:refs/heads/main', client_id: 'ci', scope: 'artifacts:read' });
    expect(decodeJwt(child.body.access_token).act).toBeUndefined();
  });

  it('are revoked with their parent, the whole line, in the same transaction: inactive at once, listed as revoked', async () => {
    t = await start();
    const parent = await delegate(await engineer(), await agent('agent:release-1'));
    const child = await childOf(parent.body.access_token, { actor_token: await agent('agent:helper-1'), actor_token_type: JWT });
    const grandchild = await childOf(child.body.access_token);
    for (const token of [child.body.access_token, grandchild.body.access_token]) expect((await introspect(token)).active).toBe(true);

    // The agent revokes the parent it holds (RFC 7009): the lot goes.
    const revoked = await t.http.post('/oauth2/revoke').set(bearer(await agent('agent:release-1'))).type('form').send({ token: parent.body.access_token });
    expect(revoked.status).toBe(200);
    for (const token of [parent.body.access_token, child.body.access_token, grandchild.body.access_token]) expect(await introspect(token)).toEqual({ active: false });
    const list = await t.http.get('/v1/revocations').set(bearer(await t.as.pipeline({}, 'resource-server:registry')));
    expect(list.body.items.map((i: { jti: string }) => i.jti)).toEqual(
      expect.arrayContaining([parent, child, grandchild].map((r) => decodeJwt(r.body.access_token).jti)),
    );
    const event = (await eventsOf(t, parent.body.request_id)).find((e) => e.type === 'token.revoked');
    expect(event?.data.children).toEqual([
      { request_id: child.body.request_id, jti: decodeJwt(child.body.access_token).jti },
      { request_id: grandchild.body.request_id, jti: decodeJwt(grandchild.body.access_token).jti },
    ]);
  });

  it('leave out of the revocation a child already past its expiry: it expired, and the sweep records so', async () => {
    t = await start();
    for (const revoke of ['/v1/credentials', '/oauth2/revoke']) {
      const parent = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ task_id: 'build', scopes: ['artifacts:read'], audience: registry });
      const short = await childOf(parent.body.access_token, { ttl_seconds: '10' });
      const live = await childOf(parent.body.access_token);
      t.clock.advance(11_000); // the scheduler has not run
      const by = bearer(await t.as.pipeline());
      const revoked = revoke === '/oauth2/revoke'
        ? await t.http.post(revoke).set(by).type('form').send({ token: parent.body.access_token })
        : await t.http.post(`/v1/credentials/${parent.body.request_id}/revoke`).set(by).send({ reason: 'leak' });
      expect(revoked.status).toBe(200);
      const event = (await eventsOf(t, parent.body.request_id)).find((e) => e.type === 'token.revoked');
      expect(event?.data.children, revoke).toEqual([{ request_id: live.body.request_id, jti: decodeJwt(live.body.access_token).jti }]);
      await t.broker.scheduler.runAll();
      expect((await eventsOf(t, short.body.request_id)).map((e) => e.type), revoke).toEqual(['request.created', 'token.issued', 'grant.expired']);
      expect((await t.http.get(`/v1/credentials/${short.body.request_id}`).set(by)).body.status).toBe('expired');
    }
  });

  it('make a new actor take part in the parent\'s steps, whatever scopes the child keeps', async () => {
    t = await start(withAgentsTrainingAndDeploying);
    const details = JSON.stringify(model('fraud-v1'));
    const training = await delegate(await engineer('alice'), await agent('agent:release-1'), { scope: 'artifacts:read model:train', authorization_details: details });
    expect(training.status).toBe(200);
    // helper-1 joins alice's training of fraud-v1, keeping only artifacts:read: it trains it too.
    const helping = await childOf(training.body.access_token, { scope: 'artifacts:read', actor_token: await agent('agent:helper-1', 'hank'), actor_token_type: JWT });
    expect(helping.status).toBe(200);
    const deploying = await delegate(await engineer('erin'), await agent('agent:helper-1', 'hank'), { scope: 'model:deploy', authorization_details: details });
    expectOAuth(deploying, 'invalid_scope', /Duty "model-release".*step "train"/);
    // And checked against them: helper-2, which deploys fraud-v1 for erin, may not join its training.
    const deploy = await delegate(await engineer('erin'), await agent('agent:helper-2', 'hugo'), { scope: 'model:deploy', authorization_details: details });
    expectOAuth(deploy, 'authorization_pending');
    const joining = await childOf(training.body.access_token, { scope: 'artifacts:read', actor_token: await agent('agent:helper-2', 'hugo'), actor_token_type: JWT });
    expectOAuth(joining, 'invalid_scope', /Duty "model-release".*step "deploy"/);
  });

  it('make a new actor take part in the root\'s steps, however many children dropped the step\'s scope before it joined', async () => {
    t = await start(withAgentsTrainingAndDeploying);
    const details = JSON.stringify(model('fraud-v1'));
    const training = await delegate(await engineer('alice'), await agent('agent:release-1'), { scope: 'artifacts:read model:train', authorization_details: details });
    expect(training.status).toBe(200);
    // The training's child keeps artifacts:read only, with no new actor; helper-1 joins at its child.
    const narrowed = await childOf(training.body.access_token, { scope: 'artifacts:read' });
    expect(narrowed.status).toBe(200);
    const helping = await childOf(narrowed.body.access_token, { actor_token: await agent('agent:helper-1', 'hank'), actor_token_type: JWT });
    expect(helping.status).toBe(200);
    const deploying = await delegate(await engineer('erin'), await agent('agent:helper-1', 'hank'), { scope: 'model:deploy', authorization_details: details });
    expectOAuth(deploying, 'invalid_scope', /Duty "model-release".*step "train"/);
    // And the other way: helper-2 deploys fraud-v1 for erin, and may not join its training that way either.
    expectOAuth(await delegate(await engineer('erin'), await agent('agent:helper-2', 'hugo'), { scope: 'model:deploy', authorization_details: details }), 'authorization_pending');
    const joining = await childOf(narrowed.body.access_token, { actor_token: await agent('agent:helper-2', 'hugo'), actor_token_type: JWT });
    expectOAuth(joining, 'invalid_scope', /Duty "model-release".*step "deploy"/);
  });

  it('count for limits like any request', async () => {
    t = await start((config) => (config.limits = { liveGrants: 2 }));
    const parent = await delegate(await engineer(), await agent('agent:release-1'));
    expect((await childOf(parent.body.access_token)).status).toBe(200);
    expect((await childOf(parent.body.access_token)).status).toBe(429);
  });
});

describe('auditors', () => {
  it('find delegated and child tokens by actor, with the chain in each row', async () => {
    t = await start();
    const parent = await delegate(await engineer(), await agent('agent:release-1'));
    await childOf(parent.body.access_token, { actor_token: await agent('agent:helper-1'), actor_token_type: JWT });
    await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ task_id: 'build', scopes: ['artifacts:read'], audience: registry });
    const ivy = await t.as.person('ivy', ['auditors']);
    const byRelease = await t.http.get('/v1/audit/issuances?actor=agent:release-1').set(bearer(ivy));
    expect(byRelease.body.items).toHaveLength(2);
    const byHelper = await t.http.get('/v1/audit/issuances?actor=agent:helper-1').set(bearer(ivy));
    expect(byHelper.body.items).toEqual([expect.objectContaining({ act: { iss: AGENTS_ISS, sub: 'agent:helper-1', act: { iss: AGENTS_ISS, sub: 'agent:release-1' } } })]);
  });
});

describe('the CLI', () => {
  it('acts for its identity with --actor-token, waits for approval and collects with both tokens, bound with --dpop', async () => {
    const served = await startServedBroker({ configure: (config) => withAgents(config as Record<string, any>, agents) });
    t = served.t;
    try {
      const dir = tempDir('jit-agent-');
      const actorFile = join(dir, 'agent.jwt');
      writeFileSync(actorFile, await agent('agent:release-1'));
      const env = { BROKER_URL: served.url, BROKER_IDENTITY_TOKEN: await engineer(), JIT_CONFIG_DIR: dir, JIT_POLL_INTERVAL: '100ms' };
      const read = await runCli(['request', '--scope', 'artifacts:read', '--audience', registry, '--task', 'assist', '--actor-token', actorFile, '--dpop'], env);
      expect(read.code, read.stderr).toBe(0);
      expect(decodeJwt(read.stdout.trim())).toMatchObject({ sub: 'alice', act: { sub: 'agent:release-1' }, cnf: { jkt: expect.any(String) } });

      // A deploy waits: the CLI polls as alice and collects with alice's and the agent's tokens.
      const waiting = runCli(['request', '--scope', 'model:deploy', '--audience', registry, '--task', 'release', '--actor-token', actorFile, '--wait', '30s'], env);
      let pending: { request_id: string; digest: string } | undefined;
      while (!pending) {
        const listed = await t.http.get('/v1/approvals').set(bearer(await t.as.person('carol', ['approvers', 'ml-release'])));
        pending = listed.body.items[0];
        if (!pending) await new Promise((resolve) => setTimeout(resolve, 50));
      }
      await t.http.post(`/v1/credentials/${pending.request_id}/approvals`).set(bearer(await t.as.person('carol', ['approvers', 'ml-release']))).send({ decision: 'approve', reason: 'ok', digest: pending.digest });
      const deployed = await waiting;
      expect(deployed.code, deployed.stderr).toBe(0);
      expect(decodeJwt(deployed.stdout.trim())).toMatchObject({ sub: 'alice', scope: 'model:deploy', act: { sub: 'agent:release-1' } });

      const refused = await runCli(['request', '--scope', 'db:admin', '--audience', registry, '--task', 'x', '--actor-token', actorFile], env);
      expect(refused.code).toBe(3);
      expect(refused.stderr).toMatch(/invalid_scope/);
    } finally {
      await served.close();
    }
  });
});
