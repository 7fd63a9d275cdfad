import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import YAML from 'yaml';
import { afterEach, describe, expect, it } from 'vitest';
import { requestDigest } from '../../src/requests/index.js';
import { baseConfig, bearer, listen, model, startTestBroker, withModelRelease, type TestBroker, type TestBrokerOptions } from '../helpers/broker.js';
import { runCli } from '../helpers/cli.js';
import { eventsOf } from '../helpers/records.js';

/**
 * CONTRACT section 1, "Duties (one object, many steps)": whoever took part in one step of an
 * object's lifecycle (the requesting identity and its person, the job's initiator, each approver)
 * may not take part in another step for the same object, however much later, on any replica.
 * Each test is an attacker's attempt: another step of the same model by the same party.
 */

let t: TestBroker;
afterEach(async () => {
  await t.close();
});

const bob = { name: 'bob', aliases: [{ issuer: 'ci', username: 'bob-gh' }, { issuer: 'sso', username: 'bob@acme.com' }] };
const start = (options: { within?: string; configure?: (config: Record<string, any>) => void } & TestBrokerOptions = {}) =>
  startTestBroker({
    ...options,
    configure(config) {
      withModelRelease(config, options.within);
      config.people = [bob];
      options.configure?.(config);
    },
  });

const registry = 'registry.acme.internal';
const train = (identifier: string) => ({ task_id: 'train', scopes: ['model:train'], audience: registry, authorization_details: model(identifier) });
const register = (identifier: string) => ({ task_id: 'register', scopes: ['model:register'], audience: registry, authorization_details: model(identifier) });
const deploy = (identifier: string) => ({ task_id: 'deploy', scopes: ['model:deploy'], audience: registry, authorization_details: model(identifier) });

/** The training pipeline, in a run a person started. */
const trainer = (actor = 'pat') => t.as.ml({ actor });
/** The registry job and the release pipeline, each in a run a person started. */
const registryJob = (actor = 'pat') => t.as.pipeline({ repository: 'acme/registry', actor }, 'repo:acme/registry:ref:refs/heads/main');
const releaseJob = (actor = 'pat') => t.as.pipeline({ repository: 'acme/release', actor }, 'repo:acme/release:ref:refs/heads/main');
const releaser = (sub: string, groups = ['approvers', 'ml-release'], claims: Record<string, unknown> = {}) => t.as.person(sub, groups, claims);
const bobAtSso = (groups = ['approvers', 'ml-release', 'on-call']) => t.as.person('b-7', groups, { preferred_username: 'bob@acme.com' });

const post = (token: string, body: object) => t.http.post('/v1/credentials').set(bearer(token)).send(body);
const decide = (token: string, pending: { request_id: string; digest: string }, decision = 'approve') =>
  t.http.post(`/v1/credentials/${pending.request_id}/approvals`).set(bearer(token)).send({ decision, reason: 'checked', digest: pending.digest });
const expectDuty = (response: { status: number; body: Record<string, unknown> }, object: string, step: string) => {
  expect(response.status).toBe(403);
  expect(response.body).toMatchObject({ type: expect.stringMatching(/separation_of_duties$/), duty: 'model-release', object, step });
  expect(response.body.detail).toMatch(new RegExp(`Duty "model-release".*step "${step}"`));
};

describe('one party, two steps of one model', () => {
  it('refuses the same pipeline identity: it trained fraud-v1, it may not deploy fraud-v1, and may deploy another model', async () => {
    t = await start({ configure: (c) => c.policies.find((p: { id: string }) => p.id === 'ml-main').scopes.push('model:register') });
    expect((await post(await trainer(), train('fraud-v1'))).status).toBe(201);
    expectDuty(await post(await trainer(), register('fraud-v1')), 'fraud-v1', 'train');
    expectDuty(await post(await trainer(), { ...deploy('fraud-v1'), task_id: 'deploy a week later' }), 'fraud-v1', 'train');
    expect((await post(await trainer(), deploy('fraud-v2'))).status).toBe(202);
  });

  it('refuses the same person through another issuer: bob started the training run, bob at the SSO may not deploy', async () => {
    t = await start();
    expect((await post(await trainer('bob-gh'), train('fraud-v1'))).status).toBe(201);
    expectDuty(await post(await bobAtSso(), deploy('fraud-v1')), 'fraud-v1', 'train');
    expect((await post(await bobAtSso(), deploy('fraud-v2'))).status).toBe(202);
  });

  it('refuses the job\'s initiator: a registry job bob started may not register what a run bob started trained', async () => {
    t = await start();
    expect((await post(await trainer('bob-gh'), train('fraud-v1'))).status).toBe(201);
    expectDuty(await post(await registryJob('BOB-GH'), register('fraud-v1')), 'fraud-v1', 'train');
    expect((await post(await registryJob('bob-gh'), register('fraud-v2'))).status).toBe(202);
    expect((await post(await registryJob('carol'), register('fraud-v1'))).status).toBe(202);
  });

  it('refuses an approver of an earlier step, as a later requester and as a later approver', async () => {
    t = await start();
    const registering = (await post(await registryJob('rita'), register('fraud-v1'))).body;
    expect((await decide(await releaser('alice'), registering)).status).toBe(200); // alice took part in register
    expectDuty(await post(await releaser('alice', ['on-call']), deploy('fraud-v1')), 'fraud-v1', 'register');

    const deploying = (await post(await releaseJob('ray'), deploy('fraud-v1'))).body;
    const refused = await decide(await releaser('alice'), deploying);
    expectDuty(refused, 'fraud-v1', 'register');
    expect(refused.body.detail).toMatch(/you \(under any of your identities\) took part/);
    // A denial is always allowed; and the same approver may approve another model's deploy.
    expect((await decide(await releaser('alice'), deploying, 'deny')).status).toBe(200);
    const other = (await post(await releaseJob('ray'), deploy('fraud-v2'))).body;
    expect((await decide(await releaser('alice'), other)).status).toBe(200);
  });

  it('checks an approver only after deciding whether it may see the request at all (404 first)', async () => {
    t = await start();
    const registering = (await post(await registryJob('rita'), register('fraud-v1'))).body;
    await decide(await releaser('alice'), registering);
    const deploying = (await post(await releaseJob('ray'), deploy('fraud-v1'))).body;
    expect(deploying.status).toBe('pending_approval');
    // alice outside ml-release: the deploy is not hers to see, whatever she did before.
    expect((await decide(await t.as.person('alice', ['approvers']), deploying)).status).toBe(404);
  });

  it('allows repeating the same step, and compares identifiers normalised: Fraud-V1 is fraud-v1', async () => {
    t = await start();
    expect((await post(await trainer(), train('fraud-v1'))).status).toBe(201);
    expect((await post(await trainer(), train('Fraud-V1'))).status).toBe(201);
    expectDuty(await post(await trainer(), deploy('ＦＲＡＵＤ-v1\u200B')), 'fraud-v1', 'train');
    // Fillers that show as blank, a Hangul letter and a Khitan mark among them.
    expectDuty(await post(await trainer(), deploy('fraud\u3164-v1\u2800')), 'fraud-v1', 'train');
    expectDuty(await post(await trainer(), deploy('fraud\u{16FE4}-v1')), 'fraud-v1', 'train');
  });

  it('refuses one request holding scopes of two steps for one object', async () => {
    t = await start();
    const both = await post(await trainer(), { ...train('fraud-v1'), scopes: ['model:train', 'model:deploy'] });
    expect(both.status).toBe(403);
    expect(both.body).toMatchObject({ duty: 'model-release', steps: ['train', 'deploy'], object: 'fraud-v1' });
    expect(both.body.detail).toContain('"fraud-v1"');
    expect(await t.db.sql('SELECT id FROM requests')).toEqual([]);
  });
});

describe('when taking part ends', () => {
  it('frees the participants of a request denied, or expired, while it waited', async () => {
    t = await start();
    const registering = (await post(await registryJob('bob-gh'), register('fraud-v3'))).body;
    expectDuty(await post(await trainer('bob-gh'), train('fraud-v3')), 'fraud-v3', 'register'); // pending takes part
    await decide(await releaser('carol'), registering, 'deny');
    expect((await post(await trainer('bob-gh'), train('fraud-v3'))).status).toBe(201);

    const waiting = (await post(await registryJob('dave'), register('fraud-v4'))).body;
    expectDuty(await post(await trainer('dave'), train('fraud-v4')), 'fraud-v4', 'register');
    t.clock.advance(61 * 60_000); // approval.timeout is 1h: expired, whether or not the scheduler swept it
    expect((await post(await trainer('dave'), train('fraud-v4'))).status).toBe(201);
    expect(waiting.request_id).toBeDefined();
  });

  it('binds for `within` after the grant ends: its expiry, or its revocation', async () => {
    t = await start({ within: '1h' });
    const trained = (await post(await trainer(), train('fraud-v1'))).body; // ml-main caps it at 10m
    expect(trained.expires_in).toBe(600);
    t.clock.advance(600_000 + 59 * 60_000); // ended 59 minutes ago
    expectDuty(await post(await releaseJob('pat'), deploy('fraud-v1')), 'fraud-v1', 'train');
    t.clock.advance(61_000);
    expect((await post(await releaseJob('pat'), deploy('fraud-v1'))).status).toBe(202);

    const other = (await post(await trainer('erin'), train('fraud-v9'))).body;
    await t.http.post(`/v1/credentials/${other.request_id}/complete`).set(bearer(await trainer('erin')));
    t.clock.advance(59 * 60_000);
    expectDuty(await post(await releaseJob('erin'), deploy('fraud-v9')), 'fraud-v9', 'train');
    t.clock.advance(61_000); // an hour after completion, long before the token would have expired plus an hour
    expect((await post(await releaseJob('erin'), deploy('fraud-v9'))).status).toBe(202);
  });

  it('binds always without `within`', async () => {
    t = await start();
    await post(await trainer(), train('fraud-v1'));
    t.clock.advance(400 * 86_400_000);
    await t.broker.scheduler.runAll();
    expectDuty(await post(await releaseJob('pat'), deploy('fraud-v1')), 'fraud-v1', 'train');
  });
});

describe('policy identifiers', () => {
  it('grants a policy\'s scopes only for the objects its globs name, exactly as sent', async () => {
    t = await start();
    expect((await post(await registryJob(), register('fraud-v1'))).status).toBe(202);
    const churn = await post(await registryJob(), register('churn-v1'));
    expect(churn.status).toBe(202);
    const refused = await post(await registryJob(), register('ltv-v1'));
    expect(refused.status).toBe(403);
    expect(refused.body).toMatchObject({ scopes: ['model:register'] });
    expect(refused.body.detail).toMatch(/for the objects named/);
    // Every entry of the type must match, not one of them.
    const mixed = await post(await registryJob(), { ...register('fraud-v1'), authorization_details: [...model('fraud-v1'), ...model('ltv-v1')] });
    expect(mixed.status).toBe(403);
    // Naming no object is a bad request (400) before any policy is asked, globs or not.
    for (const details of [undefined, [{ type: 'model', actions: ['register'] }]]) {
      const unnamed = await post(await registryJob(), { ...register('fraud-v1'), authorization_details: details });
      expect(unnamed.status, JSON.stringify(details)).toBe(400);
      expect(unnamed.body.type).toMatch(/invalid_request$/);
    }
    expect(await t.db.sql("SELECT seq FROM audit_events WHERE type = 'request.refused'")).toHaveLength(2);
  });

  it('grants nothing to a request naming no object of a listed type, even for a scope in no step (no 400 comes first)', async () => {
    // model:report is in no step, so no duty asks for an object first: only the policy's
    // identifiers stand between a request naming no model and the scope.
    t = await start({
      configure(config) {
        config.scopes.push({ name: 'model:report', risk: 'low', maxTtl: '10m' });
        config.policies.push({ id: 'reports', match: { issuer: 'ci', subject: 'repo:acme/registry:*' }, scopes: ['model:report'], identifiers: { model: ['fraud-*'] } });
      },
    });
    const report = async (authorization_details?: object[]) =>
      post(await registryJob(), { task_id: 'report', scopes: ['model:report'], audience: registry, ...(authorization_details ? { authorization_details } : {}) });
    for (const [what, details] of [
      ['no authorization_details', undefined],
      ['an entry of the type without an identifier', [{ type: 'model', actions: ['report'] }]],
      ['an entry the globs do not match', model('ltv-v1')],
    ] as const) {
      const refused = await report(details as object[] | undefined);
      expect(refused.status, what).toBe(403);
      expect(refused.body, what).toMatchObject({ type: expect.stringMatching(/policy_denied$/), scopes: ['model:report'] });
      expect(refused.body.detail, what).toMatch(/for the objects named/);
    }
    const granted = await report(model('fraud-v1'));
    expect(granted.status).toBe(201);
    expect(decodeJwt(granted.body.access_token).scope).toBe('model:report');
  });
});

describe('authorization_details', () => {
  it('are carried in the token, every view, the webhook-free events and the audit row, and change the digest', async () => {
    t = await start();
    const details = [{ type: 'model', identifier: 'fraud-v1', actions: ['deploy'], locations: ['https://registry.acme.internal'] }];
    const pending = await post(await releaseJob(), { ...deploy('x'), authorization_details: details });
    expect(pending.status).toBe(202);
    expect(pending.body.authorization_details).toEqual(details);
    const digestInput = {
      requestId: pending.body.request_id,
      requester: { iss: t.issuers.ci.iss, sub: 'repo:acme/release:ref:refs/heads/main' },
      initiator: 'pat',
      taskId: 'deploy',
      scopes: ['model:deploy'],
      audience: registry,
      ttlSeconds: 600,
      justification: null,
      breakGlass: false,
    };
    expect(pending.body.digest).toBe(requestDigest({ ...digestInput, authorizationDetails: details }));
    expect(pending.body.digest).not.toBe(requestDigest({ ...digestInput, authorizationDetails: model('fraud-v2') }));

    await decide(await releaser('carol'), pending.body);
    const collected = await t.http.post(`/v1/credentials/${pending.body.request_id}/token`).set(bearer(await releaseJob()));
    expect(collected.body.authorization_details).toEqual(details);
    expect(decodeJwt(collected.body.access_token).authorization_details).toEqual(details);
    const view = await t.http.get(`/v1/credentials/${pending.body.request_id}`).set(bearer(await releaseJob()));
    expect(view.body.authorization_details).toEqual(details);
    const events = await eventsOf(t, pending.body.request_id);
    expect(events.find((e) => e.type === 'request.created')?.data).toMatchObject({
      authorization_details: details,
      duties: [{ duty: 'model-release', step: 'deploy', object: 'fraud-v1' }],
    });
    expect(events.find((e) => e.type === 'token.issued')?.data.authorization_details).toEqual(details);
    const audit = await t.http.get('/v1/audit/issuances?identifier=FRAUD-V1').set(bearer(await t.as.person('ivy', ['auditors'])));
    expect(audit.body.items).toEqual([expect.objectContaining({ request_id: pending.body.request_id, authorization_details: details })]);
  });

  it.each([
    ['a type no duty has', [{ type: 'dataset', identifier: 'x' }], '#/authorization_details/0/type'],
    ['a member RFC 9396 does not define', [{ type: 'model', identifier: 'fraud-v1', amount: 5 }], '#/authorization_details/0/amount'],
    ['no entry at all', [], '#/authorization_details'],
    ['seventeen entries', Array.from({ length: 17 }, (_, i) => ({ type: 'model', identifier: `m-${i}` })), '#/authorization_details'],
    ['an identifier of 257 characters', [{ type: 'model', identifier: 'x'.repeat(257) }], '#/authorization_details/0/identifier'],
    ['actions that are not a list of text', [{ type: 'model', identifier: 'fraud-v1', actions: 'deploy' }], '#/authorization_details/0/actions'],
    ['not a list', { type: 'model', identifier: 'fraud-v1' }, '#/authorization_details'],
  ])('refuses %s with 400 naming the field, and records nothing', async (_what, details, pointer) => {
    t = await start();
    const response = await post(await releaseJob(), { ...deploy('x'), authorization_details: details });
    expect(response.status).toBe(400);
    expect(response.body.type).toMatch(/invalid_request$/);
    expect(response.body.errors).toEqual(expect.arrayContaining([expect.objectContaining({ pointer })]));
    expect(await t.db.sql('SELECT id FROM requests')).toEqual([]);
  });

  it('refuses a step scope that names no object of its duty\'s type, or one without an identifier', async () => {
    t = await start();
    const unnamed = await post(await trainer(), { task_id: 'train', scopes: ['model:train'], audience: registry });
    expect(unnamed.status).toBe(400);
    expect(unnamed.body.detail).toMatch(/step "train" of duty "model-release".*type "model"/);
    const anonymous = await post(await trainer(), { ...train('x'), authorization_details: [{ type: 'model', actions: ['train'] }] });
    expect(anonymous.status).toBe(400);
    expect(anonymous.body.errors).toEqual([{ pointer: '#/authorization_details/0/identifier', detail: expect.stringMatching(/required/) }]);
  });

  it('answers invalid_authorization_details at the token endpoint, and names them in its answer', async () => {
    t = await start();
    const exchange = async (authorizationDetails: string | undefined, scope = 'model:train') =>
      t.http.post('/oauth2/token').type('form').send({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: await trainer(),
        subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
        scope,
        audience: registry,
        task_id: 'train',
        ...(authorizationDetails === undefined ? {} : { authorization_details: authorizationDetails }),
      });
    for (const bad of ['not json', '{"type":"model"}', '[{"type":"dataset","identifier":"x"}]', '[{"type":"model"}]']) {
      const response = await exchange(bad);
      expect(response.status).toBe(400);
      expect(response.body.error).toBe('invalid_authorization_details');
    }
    expect((await exchange(undefined)).body.error).toBe('invalid_authorization_details');
    const granted = await exchange(JSON.stringify(model('fraud-v1')));
    expect(granted.status).toBe(200);
    expect(granted.body.authorization_details).toEqual(model('fraud-v1'));
    const refused = await exchange(JSON.stringify(model('fraud-v1')), 'model:deploy');
    expect(refused.body.error).toBe('invalid_scope'); // the duty: the same pipeline trained it
    expect((await t.http.get('/.well-known/oauth-authorization-server')).body.authorization_details_types_supported).toEqual(['model']);
    // Read only for a caller whose token was accepted, as /v1 reads a body (and jit policy test judges a case).
    const unknown = await t.http.post('/oauth2/token').type('form').send({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: 'not-a-token',
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      scope: 'model:train',
      audience: registry,
      task_id: 'train',
      authorization_details: 'not json',
    });
    expect(unknown.body).toMatchObject({ error: 'invalid_request', error_description: expect.stringMatching(/subject_token/) });
  });
});

describe('a reload while a request waits', () => {
  const reloadWith = async (edit: (raw: Record<string, any>) => void) => {
    const raw = baseConfig(t.dir, t.issuers, t.db.url) as Record<string, any>;
    withModelRelease(raw);
    raw.people = [bob];
    edit(raw);
    const file = join(t.dir, 'reloaded.yaml');
    writeFileSync(file, YAML.stringify(raw));
    expect(await t.broker.reload(file, {})).toMatchObject({ status: 'applied' });
  };
  const collect = (token: string, id: string) => t.http.post(`/v1/credentials/${id}/token`).set(bearer(token));
  const expectDeniedAtCollection = async (response: { status: number; body: Record<string, unknown> }, id: string, step: string) => {
    expect(response.status).toBe(409);
    expect(response.body).toMatchObject({ duty: 'model-release', object: 'fraud-v1', step });
    expect(await t.db.sql('SELECT status FROM requests WHERE id = ?', [id])).toEqual([{ status: 'denied' }]);
    expect(await t.db.sql('SELECT request_id FROM issuances WHERE request_id = ?', [id])).toEqual([]);
    expect((await eventsOf(t, id)).at(-1)).toMatchObject({ type: 'request.denied', data: { reason: 'separation_of_duties' } });
  };

  it('judges its collection under aliases added since: bob at the SSO may not deploy what bob-gh trained', async () => {
    t = await start({ configure: (config) => (config.people = []) });
    expect((await post(await trainer('bob-gh'), train('fraud-v1'))).status).toBe(201);
    const deploying = (await post(await bobAtSso(), deploy('fraud-v1'))).body; // not yet known as bob
    expect(deploying.status).toBe('pending_approval');
    await reloadWith(() => {}); // bob-gh and bob@acme.com are one person now
    expect((await decide(await releaser('carol'), deploying)).status).toBe(200);
    await expectDeniedAtCollection(await collect(await bobAtSso(), deploying.request_id), deploying.request_id, 'train');
  });

  it('judges its collection under steps added since, and records the step in the chain of custody', async () => {
    t = await start({ configure: (config) => (config.duties[0].steps = config.duties[0].steps.filter((s: { name: string }) => s.name !== 'register')) });
    expect((await post(await trainer('bob-gh'), train('fraud-v1'))).status).toBe(201);
    t.clock.advance(1_000);
    const registering = (await post(await registryJob('bob-gh'), register('fraud-v1'))).body; // no step yet
    await reloadWith(() => {}); // register is a step now
    expect((await decide(await releaser('carol'), registering)).status).toBe(200);
    await expectDeniedAtCollection(await collect(await registryJob('bob-gh'), registering.request_id), registering.request_id, 'train');
    const custody = await t.http.get('/v1/audit/duties?duty=model-release&identifier=fraud-v1').set(bearer(await t.as.person('ivy', ['auditors'])));
    expect(custody.body.items.map((r: { step: string; status: string }) => [r.step, r.status])).toEqual([['train', 'issued'], ['register', 'denied']]);
  });

  it('judges its approvers at collection too: one who, by an alias added since, trained the model denies the deploy', async () => {
    t = await start({ configure: (config) => (config.people = []) });
    expect((await post(await trainer('bob-gh'), train('fraud-v1'))).status).toBe(201);
    const deploying = (await post(await releaseJob('ray'), deploy('fraud-v1'))).body;
    expect((await decide(await bobAtSso(), deploying)).status).toBe(200); // not yet known as bob
    await reloadWith(() => {}); // bob-gh and bob@acme.com are one person now
    await expectDeniedAtCollection(await collect(await releaseJob('ray'), deploying.request_id), deploying.request_id, 'train');
  });

  it('records its approvers as taking part in a step added since their approval', async () => {
    t = await start({ configure: (config) => (config.duties[0].steps = config.duties[0].steps.filter((s: { name: string }) => s.name !== 'register')) });
    const registering = (await post(await registryJob('rita'), register('fraud-v1'))).body; // no step yet
    expect((await decide(await releaser('carol'), registering)).status).toBe(200);
    await reloadWith(() => {}); // register is a step now
    expect((await collect(await registryJob('rita'), registering.request_id)).status).toBe(201);
    expectDuty(await post(await releaser('carol', ['on-call']), deploy('fraud-v1')), 'fraud-v1', 'register');
  });

  it('counts the step a request was recorded in as its own when a reload renamed it: the same job\'s second deploy, and its approver, go through', async () => {
    t = await start();
    const first = (await post(await releaseJob(), deploy('fraud-v1'))).body;
    const second = (await post(await releaseJob(), { ...deploy('fraud-v1'), task_id: 'deploy-2' })).body;
    expect((await decide(await releaser('carol'), first)).status).toBe(200);
    expect((await collect(await releaseJob(), first.request_id)).status).toBe(201);
    await reloadWith((raw) => (raw.duties[0].steps[2].name = 'release'));
    // carol approved the first under "deploy"; the second was recorded in "deploy" too: the same step.
    expect((await decide(await releaser('carol'), second)).status).toBe(200);
    expect((await collect(await releaseJob(), second.request_id)).status).toBe(201);
    // A request made after the rename names the step anew: earlier participations under the old
    // name are another step's, and refuse it (participations are recorded by name).
    expectDuty(await post(await releaseJob(), { ...deploy('fraud-v1'), task_id: 'deploy-3' }), 'fraud-v1', 'deploy');
  });

  it('takes participations under a step\'s former names (formerly) as that step\'s: a rename keeps who may repeat it', async () => {
    t = await start();
    expect((await post(await trainer('bob-gh'), train('fraud-v1'))).status).toBe(201);
    const first = (await post(await releaseJob(), deploy('fraud-v1'))).body;
    expect((await decide(await releaser('carol'), first)).status).toBe(200);
    expect((await collect(await releaseJob(), first.request_id)).status).toBe(201);
    await reloadWith((raw) => Object.assign(raw.duties[0].steps[2], { name: 'release', formerly: ['deploy'] }));
    const again = (await post(await releaseJob(), { ...deploy('fraud-v1'), task_id: 'deploy-2' })).body;
    expect(again.status).toBe('pending_approval');
    expect((await decide(await releaser('carol'), again)).status).toBe(200); // she approved the step under its old name
    // Another step is still another: bob trained it, under any name deploy had.
    expectDuty(await post(await bobAtSso(), deploy('fraud-v1')), 'fraud-v1', 'train');
  });
});

describe('GET /v1/audit/duties', () => {
  it('shows who took part in each step of one model, oldest first, denied requests included', async () => {
    t = await start();
    const auditor = await t.as.person('ivy', ['auditors']);
    expect((await post(await trainer('bob-gh'), train('fraud-v1'))).status).toBe(201);
    t.clock.advance(1_000);
    const registering = (await post(await registryJob('carol'), register('Fraud-v1'))).body;
    await decide(await releaser('alice'), registering);
    t.clock.advance(1_000);
    const refused = (await post(await releaseJob('dave'), deploy('fraud-v1'))).body;
    await decide(await releaser('erin'), refused, 'deny');
    t.clock.advance(1_000);
    await post(await trainer('zoe'), train('fraud-v2')); // another model
    await post(await trainer(), deploy('fraud-v1')); // refused at once: never a request

    const custody = await t.http.get('/v1/audit/duties?duty=model-release&identifier=FRAUD-v1').set(bearer(auditor));
    expect(custody.status).toBe(200);
    expect(custody.body.items).toEqual([
      expect.objectContaining({ step: 'train', status: 'issued', initiator: 'bob-gh', approvals: [] }),
      expect.objectContaining({ step: 'register', status: 'approved', initiator: 'carol', approvals: [expect.objectContaining({ sub: 'alice', decision: 'approve' })] }),
      expect.objectContaining({ step: 'deploy', status: 'denied', initiator: 'dave', approvals: [expect.objectContaining({ sub: 'erin', decision: 'deny' })] }),
    ]);
    const paged = await t.http.get('/v1/audit/duties?duty=model-release&identifier=fraud-v1&limit=2').set(bearer(auditor));
    expect(paged.body.items.map((r: { step: string }) => r.step)).toEqual(['train', 'register']);
    const rest = await t.http.get(`/v1/audit/duties?duty=model-release&identifier=fraud-v1&cursor=${paged.body.next_cursor}`).set(bearer(auditor));
    expect(rest.body).toEqual({ items: [expect.objectContaining({ step: 'deploy' })], next_cursor: null });

    expect((await t.http.get('/v1/audit/duties?duty=model-release').set(bearer(auditor))).status).toBe(400);
    expect((await t.http.get('/v1/audit/duties?identifier=fraud-v1').set(bearer(auditor))).status).toBe(400);
    expect((await t.http.get('/v1/audit/duties?duty=model-release&identifier=fraud-v1').set(bearer(await releaser('alice')))).status).toBe(403);
    const byType = await t.http.get('/v1/audit/issuances?type=model').set(bearer(auditor));
    expect(byType.body.items).toHaveLength(2);
  });
});

describe('GET /v1/audit/duties, paged while steps are taken', () => {
  it('lists a step recorded after a page was read, even one whose clock was behind that page\'s last (another replica\'s clock)', async () => {
    t = await start();
    const auditor = await t.as.person('ivy', ['auditors']);
    const started = t.clock();
    t.clock.set(started + 10_000); // the replica that takes the first steps runs ahead
    expect((await post(await trainer('bob-gh'), train('fraud-v1'))).status).toBe(201);
    t.clock.advance(1_000);
    expect((await post(await releaseJob('dave'), deploy('fraud-v1'))).status).toBe(202);
    const first = await t.http.get('/v1/audit/duties?duty=model-release&identifier=fraud-v1&limit=1').set(bearer(auditor));
    expect(first.body.items.map((r: { step: string }) => r.step)).toEqual(['train']);

    t.clock.set(started); // the next step, on a replica whose clock is behind
    expect((await post(await registryJob('carol'), register('fraud-v1'))).status).toBe(202);
    const rest = await t.http.get(`/v1/audit/duties?duty=model-release&identifier=fraud-v1&cursor=${first.body.next_cursor}`).set(bearer(auditor));
    expect(rest.body.items.map((r: { step: string }) => r.step)).toEqual(['deploy', 'register']);
  });
});

describe('the CLI', () => {
  it('names objects with jit request --object, and shows one object\'s custody with jit audit duties', async () => {
    t = await start();
    const served = await listen(t);
    try {
      const env = async (token: string) => ({ BROKER_URL: served.url, BROKER_IDENTITY_TOKEN: token });
      const trained = await runCli(['request', '--scope', 'model:train', '--audience', registry, '--task', 'train', '--object', 'model=fraud-v1', '--json'], await env(await trainer('bob-gh')));
      expect(trained.code).toBe(0);
      expect(JSON.parse(trained.stdout).authorization_details).toEqual(model('fraud-v1'));
      const refused = await runCli(
        ['request', '--scope', 'model:deploy', '--audience', registry, '--task', 'deploy', '--authorization-details', JSON.stringify(model('FRAUD-v1')), '--wait', '0'],
        await env(await bobAtSso()),
      );
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toMatch(/separation_of_duties.*step "train"/);
      expect((await runCli(['request', '--scope', 'model:train', '--audience', registry, '--task', 't', '--object', 'model'], await env(await trainer()))).code).toBe(2);

      const custody = await runCli(['audit', 'duties', '--duty', 'model-release', '--identifier', 'fraud-v1'], await env(await t.as.person('ivy', ['auditors'])));
      expect(custody.code).toBe(0);
      expect(custody.stdout.split('\n')[0]).toMatch(/^CREATED\s+STEP\s+STATUS\s+REQUESTER\s+INITIATOR\s+APPROVALS\s+REQUEST$/);
      expect(custody.stdout).toMatch(/train\s+issued\s+repo:acme\/ml:ref:refs\/heads\/main\s+bob-gh/);
      const filtered = await runCli(['audit', 'issuances', '--identifier', 'Fraud-V1', '--json'], await env(await t.as.person('ivy', ['auditors'])));
      expect(JSON.parse(filtered.stdout)).toHaveLength(1);
    } finally {
      await served.close();
    }
  });
});
