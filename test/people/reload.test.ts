import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { afterEach, describe, expect, it } from 'vitest';
import { baseConfig, bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { eventsOf } from '../helpers/records.js';

/**
 * CONTRACT section 7: a reloaded file takes effect for every later request; section 1: equal
 * person keys are one person for every restriction. So a `people` alias added by a SIGHUP reaches
 * requests and grants made before it, and a scope a reload removes takes its approver rule and
 * its grant with it: nobody decides it, nobody collects it.
 */

let t: TestBroker;
afterEach(async () => {
  await t.close();
});

const deploy = { task_id: 'deploy', scopes: ['model:deploy'], audience: 'registry.acme.internal' };
const train = { task_id: 'train', scopes: ['model:train'], audience: 'registry.acme.internal' };
const migrate = { task_id: 'migrate', scopes: ['db:admin'], audience: 'db.acme.internal' };
const bob = { name: 'bob', aliases: [{ issuer: 'ci', username: 'bob-gh' }, { issuer: 'sso', username: 'bob@acme.com' }] };

const post = (token: string, payload: object) => t.http.post('/v1/credentials').set(bearer(token)).send(payload);
const decide = (token: string, id: string, digest: string, decision = 'approve') =>
  t.http.post(`/v1/credentials/${id}/approvals`).set(bearer(token)).send({ decision, reason: 'checked', digest });
const listed = async (token: string) => ((await t.http.get('/v1/approvals').set(bearer(token))).body.items as { request_id: string }[]).map((r) => r.request_id);

/** Reloads the test broker's configuration, edited by `edit`, from a file as SIGHUP does. */
async function reload(edit: (raw: Record<string, any>) => void) {
  const raw = baseConfig(t.dir, t.issuers, t.db.url) as Record<string, any>;
  edit(raw);
  const file = join(t.dir, 'reloaded.yaml');
  writeFileSync(file, YAML.stringify(raw));
  expect(await t.broker.reload(file, {})).toMatchObject({ status: 'applied' });
}

/** bob at the SSO, an approver of model releases, known there as bob@acme.com. */
const bobAtSso = (groups = ['approvers', 'ml-release', 'on-call']) => t.as.person('b-7', groups, { preferred_username: 'bob@acme.com' });
/** The ML pipeline, in a run bob started (GitHub names him bob-gh). */
const bobsRun = () => t.as.ml({ actor: 'bob-gh' });

describe('a people alias added by a reload', () => {
  it('bars bob from approving the request of the job he started before the alias existed', async () => {
    t = await startTestBroker();
    const pending = await post(await bobsRun(), deploy);
    expect(pending.status).toBe(202);
    expect(await listed(await bobAtSso())).toContain(pending.body.request_id); // two people, as far as the broker knew

    await reload((raw) => (raw.people = [bob]));
    expect(await listed(await bobAtSso())).not.toContain(pending.body.request_id);
    const refused = await decide(await bobAtSso(), pending.body.request_id, pending.body.digest);
    expect(refused.status).toBe(403);
    expect(refused.body.detail).toMatch(/person who started the requesting job/);
    // Someone else still may.
    expect((await decide(await t.as.person('carol', ['approvers', 'ml-release']), pending.body.request_id, pending.body.digest)).status).toBe(200);
  });

  it('keeps bob from holding both halves of a toxic pair through a grant made before the alias', async () => {
    t = await startTestBroker();
    expect((await post(await bobsRun(), train)).status).toBe(201); // model:train, live
    await reload((raw) => (raw.people = [bob]));
    const refused = await post(await bobAtSso(['on-call']), deploy);
    expect(refused.status).toBe(403);
    expect(refused.body).toMatchObject({ rule: 'train-vs-deploy' });
    expect(refused.body.detail).toMatch(/one person/);
    // Without the alias the same two identities were two people.
    await reload(() => {});
    expect((await post(await bobAtSso(['on-call']), deploy)).status).toBe(202);
  });

  it('makes an earlier approval and a later one by two names of one person a single approver', async () => {
    t = await startTestBroker();
    const pending = await post(await t.as.pipeline({ repository: 'acme/db' }, 'repo:acme/db:ref:refs/heads/main'), migrate);
    expect(pending.body.approvals_required).toBe(2);
    expect((await decide(await t.as.person('al', ['approvers']), pending.body.request_id, pending.body.digest)).status).toBe(200);
    await reload((raw) => (raw.people = [{ name: 'alice', aliases: [{ issuer: 'sso', username: 'al' }, { issuer: 'sso', username: 'alice.admin' }] }]));
    const second = await decide(await t.as.person('alice.admin', ['approvers']), pending.body.request_id, pending.body.digest);
    expect(second.status).toBe(409);
    expect(second.body.detail).toMatch(/already decided/);
  });

  it('counts two approvals given before the alias made their approvers one person as one', async () => {
    const threeApprovals = (config: Record<string, any>) => (config.scopes.find((s: { name: string }) => s.name === 'db:admin').approvals = 3);
    t = await startTestBroker({ configure: threeApprovals });
    const pending = await post(await t.as.pipeline({ repository: 'acme/db' }, 'repo:acme/db:ref:refs/heads/main'), migrate);
    expect(pending.body.approvals_required).toBe(3);
    for (const approver of ['al', 'alice.admin']) {
      expect((await decide(await t.as.person(approver, ['approvers']), pending.body.request_id, pending.body.digest)).status).toBe(200);
    }
    await reload((raw) => {
      threeApprovals(raw);
      raw.people = [{ name: 'alice', aliases: [{ issuer: 'sso', username: 'al' }, { issuer: 'sso', username: 'alice.admin' }] }];
    });
    // alice and carol: two people of the three needed.
    const carol = await decide(await t.as.person('carol', ['approvers']), pending.body.request_id, pending.body.digest);
    expect(carol.status).toBe(200);
    expect(carol.body.status).toBe('pending_approval');
    const dave = await decide(await t.as.person('dave', ['approvers']), pending.body.request_id, pending.body.digest);
    expect(dave.body.status).toBe('approved');
    expect((await eventsOf(t, pending.body.request_id)).find((e) => e.type === 'request.approved')?.data).toEqual({ approvals: 3 });
  });
});

describe('an approval whose approver a reload bars', () => {
  it('counts for nothing: an alias made the approver the person who started the job', async () => {
    const twoApprovals = (config: Record<string, any>) => (config.scopes.find((s: { name: string }) => s.name === 'db:admin').approvals = 2);
    t = await startTestBroker({ configure: twoApprovals });
    const job = () => t.as.pipeline({ repository: 'acme/db', actor: 'bob-gh' }, 'repo:acme/db:ref:refs/heads/main');
    const pending = await post(await job(), migrate);
    expect((await decide(await t.as.person('bobby', ['approvers']), pending.body.request_id, pending.body.digest)).status).toBe(200);
    await reload((raw) => {
      twoApprovals(raw);
      raw.people = [{ name: 'bob', aliases: [{ issuer: 'ci', username: 'bob-gh' }, { issuer: 'sso', username: 'bobby' }] }];
    });
    // bobby is now bob, who started the job: carol's is the one approval that counts.
    const carol = await decide(await t.as.person('carol', ['approvers']), pending.body.request_id, pending.body.digest);
    expect(carol.status).toBe(200);
    expect(carol.body.status).toBe('pending_approval');
    const dave = await decide(await t.as.person('dave', ['approvers']), pending.body.request_id, pending.body.digest);
    expect(dave.body.status).toBe('approved');
  });

  it.each([
    ['its one approver is now the person who started the job', 1, ['bobby'], { name: 'bob', aliases: [{ issuer: 'ci', username: 'bob-gh' }, { issuer: 'sso', username: 'bobby' }] }],
    ['its two approvers are now one person', 2, ['al', 'alice.admin'], { name: 'alice', aliases: [{ issuer: 'sso', username: 'al' }, { issuer: 'sso', username: 'alice.admin' }] }],
  ])('leaves an approved request uncollectable when %s: 409, denied for separation of duties', async (_case, needed, approvers, person) => {
    const approvals = (config: Record<string, any>) => (config.scopes.find((s: { name: string }) => s.name === 'db:admin').approvals = needed);
    t = await startTestBroker({ configure: approvals });
    const job = () => t.as.pipeline({ repository: 'acme/db', actor: 'bob-gh' }, 'repo:acme/db:ref:refs/heads/main');
    const pending = await post(await job(), migrate);
    for (const approver of approvers) expect((await decide(await t.as.person(approver, ['approvers']), pending.body.request_id, pending.body.digest)).status).toBe(200);
    await reload((raw) => {
      approvals(raw);
      raw.people = [person];
    });
    const collected = await t.http.post(`/v1/credentials/${pending.body.request_id}/token`).set(bearer(await job()));
    expect(collected.status).toBe(409);
    expect(collected.body.detail).toMatch(new RegExp(`${needed - 1} of the ${needed} approvals it needs count now`));
    const denied = (await eventsOf(t, pending.body.request_id)).filter((event) => event.type === 'request.denied');
    expect(denied).toEqual([expect.objectContaining({ data: expect.objectContaining({ reason: 'separation_of_duties' }) })]);
    expect(await t.db.sql('SELECT jti FROM issuances WHERE request_id = ?', [pending.body.request_id])).toEqual([]);
  });
});

describe('a scope a reload removes', () => {
  const withoutDeploy = (raw: Record<string, any>) => {
    raw.scopes = raw.scopes.filter((scope: { name: string }) => scope.name !== 'model:deploy');
    for (const policy of raw.policies) policy.scopes = policy.scopes.filter((scope: string) => scope !== 'model:deploy');
    raw.separation = [];
  };

  it('can be approved by nobody: 404 for the approvers it had and for everyone else, and it leaves the listing', async () => {
    t = await startTestBroker();
    const pending = await post(await t.as.ml(), deploy);
    await reload(withoutDeploy);
    for (const approver of [await t.as.person('carol', ['approvers', 'ml-release']), await t.as.person('dave', ['approvers'])]) {
      expect(await listed(approver)).not.toContain(pending.body.request_id);
      expect((await decide(approver, pending.body.request_id, pending.body.digest)).status).toBe(404);
    }
    expect((await t.http.get(`/v1/credentials/${pending.body.request_id}`).set(bearer(await t.as.ml()))).body.approvals).toEqual([]);
  });

  it.each([
    ['the scope', withoutDeploy],
    ['the policy granting it', (raw: Record<string, any>) => (raw.policies = raw.policies.filter((p: { id: string }) => p.id !== 'ml-main'))],
  ])('is not collected once %s is gone: 409, and the request ends denied with the reason in its event', async (_what, edit) => {
    t = await startTestBroker();
    const pending = await post(await t.as.ml(), deploy);
    expect((await decide(await t.as.person('carol', ['approvers', 'ml-release']), pending.body.request_id, pending.body.digest)).status).toBe(200);
    await reload(edit);
    const collected = await t.http.post(`/v1/credentials/${pending.body.request_id}/token`).set(bearer(await t.as.ml()));
    expect(collected.status).toBe(409);
    expect(collected.body.type).toMatch(/conflict$/);
    expect(collected.body.detail).toMatch(/no longer be collected.*model:deploy/);
    const view = await t.http.get(`/v1/credentials/${pending.body.request_id}`).set(bearer(await t.as.ml()));
    expect(view.body.status).toBe('denied');
    const denied = (await eventsOf(t, pending.body.request_id)).filter((event) => event.type === 'request.denied');
    expect(denied).toEqual([expect.objectContaining({ actor: null, data: expect.objectContaining({ reason: 'policy_changed' }) })]);
    expect(await t.db.sql('SELECT jti FROM issuances WHERE request_id = ?', [pending.body.request_id])).toEqual([]);
  });

  it('answers invalid_request at the token endpoint, and mints nothing', async () => {
    t = await startTestBroker();
    const pending = await post(await t.as.ml(), deploy);
    await decide(await t.as.person('carol', ['approvers', 'ml-release']), pending.body.request_id, pending.body.digest);
    await reload(withoutDeploy);
    const collected = await t.http.post('/oauth2/token').type('form').send({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: await t.as.ml(),
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      request_id: pending.body.request_id,
    });
    expect(collected.status).toBe(400);
    expect(collected.body).toMatchObject({ error: 'invalid_request', error_description: expect.stringMatching(/no longer be collected/) });
    expect(collected.body.access_token).toBeUndefined();
  });

  it('is collected for no longer than the running configuration allows now', async () => {
    t = await startTestBroker();
    const pending = await post(await t.as.ml(), deploy);
    await decide(await t.as.person('carol', ['approvers', 'ml-release']), pending.body.request_id, pending.body.digest);
    await reload((raw) => (raw.policies.find((p: { id: string }) => p.id === 'ml-main').maxTtl = '2m'));
    const collected = await t.http.post(`/v1/credentials/${pending.body.request_id}/token`).set(bearer(await t.as.ml()));
    expect(collected.status).toBe(201);
    expect(collected.body.expires_in).toBe(120);
  });
});
