import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/index.js';
import { compileRoles, createIdentityVerifier, createPeople, loadTrustedIssuers, type IdentityVerifier } from '../../src/identity/index.js';
import { InvalidToken } from '../../src/shared/errors.js';
import { baseConfig, bearer, createTestIssuers, startTestBroker, type TestBroker, type TestIssuers } from '../helpers/broker.js';

/**
 * CONTRACT section 1: what a verified identity carries (person key, bound claims) and the claims
 * whose absence or shape refuses it. Refusals through the real app; the identity's fields, which
 * no endpoint shows whole, through the verifier the app is built with.
 */

const pipelineSub = 'repo:acme/app:ref:refs/heads/main';
const body = { task_id: 'build-1', scopes: ['artifacts:read'], audience: 'registry.acme.internal' };
/** `ci` binds requests to its jobs, a nested claim included, and requires a nested claim. */
const shapes = (config: Record<string, any>) => {
  const ci = config.identity.issuers[0];
  ci.bindClaims = ['run_id', ['kubernetes.io', 'pod', 'uid']];
  ci.requiredClaims = ['repository', ['kubernetes.io', 'namespace']];
  config.people = [{ name: 'Bob', aliases: [{ issuer: 'ci', username: 'bob-gh' }, { issuer: 'sso', username: 'bob@acme.com' }] }];
};
const job = { repository: 'acme/app', actor: 'octocat', run_id: '7781', 'kubernetes.io': { namespace: 'ci', pod: { uid: 'pod-1' } } };

describe('identity fields', () => {
  let issuers: TestIssuers;
  let verifier: IdentityVerifier;
  const now = Date.now();

  beforeAll(async () => {
    issuers = await createTestIssuers();
    const raw = baseConfig('/tmp/unused', issuers);
    shapes(raw);
    const config = parseConfig('test', raw);
    verifier = createIdentityVerifier({
      issuers: await loadTrustedIssuers(config.identity.issuers),
      roles: compileRoles(config.roles),
      people: createPeople(config),
      clockSkewMs: config.clockSkew,
      clock: () => now,
    });
  });

  it('gives a workload its initiator, raw, its person key, and its bound claims as in the token, nested as in the token', async () => {
    const identity = await verifier.verify(await issuers.ci.token(pipelineSub, { ...job, actor: 'Bob-GH ', run_id: 7781 }, { now }));
    expect(identity).toMatchObject({ iss: 'https://ci.test', sub: pipelineSub, idp: 'ci', kind: 'workload', initiator: 'Bob-GH ', person: 'u:bob' });
    expect(identity.boundClaims).toEqual({ run_id: 7781, 'kubernetes.io': { pod: { uid: 'pod-1' } } });
    expect(identity.username).toBeUndefined();
  });

  it('gives a person its username, raw, and the same person key as the job it started', async () => {
    const identity = await verifier.verify(await issuers.sso.token('okta|123', { preferred_username: 'BOB@acme.com' }, { now }));
    expect(identity).toMatchObject({ kind: 'person', username: 'BOB@acme.com', person: 'u:bob' });
    expect(identity.boundClaims).toBeUndefined();
    expect(identity.initiator).toBeUndefined();
  });

  it('keeps bound claims of every type as the token has them, and nothing else of the token', async () => {
    const identity = await verifier.verify(
      await issuers.ci.token(pipelineSub, { ...job, run_id: true, 'kubernetes.io': { namespace: 'ci', pod: { uid: 42, name: 'p' }, extra: 'x' } }, { now }),
    );
    expect(identity.boundClaims).toEqual({ run_id: true, 'kubernetes.io': { pod: { uid: 42 } } });
  });

  it('binds a claim named __proto__ as a claim, never as a prototype', async () => {
    const raw = baseConfig('/tmp/unused', issuers) as Record<string, any>;
    raw.identity.issuers[0].bindClaims = [['kubernetes.io', '__proto__']];
    const config = parseConfig('test', raw);
    const protoVerifier = createIdentityVerifier({
      issuers: await loadTrustedIssuers(config.identity.issuers),
      roles: compileRoles(config.roles),
      people: createPeople(config),
      clockSkewMs: config.clockSkew,
      clock: () => now,
    });
    const claims = JSON.parse('{"repository": "acme/app", "actor": "octocat", "kubernetes.io": {"__proto__": "pod-9"}}');
    const identity = await protoVerifier.verify(await issuers.ci.token(pipelineSub, claims, { now }));
    expect(Object.getPrototypeOf(identity.boundClaims?.['kubernetes.io'])).toBe(Object.prototype);
    expect(JSON.stringify(identity.boundClaims)).toBe('{"kubernetes.io":{"__proto__":"pod-9"}}');
    // Not there: refused, though every object "has" a __proto__.
    const without = await issuers.ci.token(pipelineSub, { repository: 'acme/app', actor: 'octocat', 'kubernetes.io': {} }, { now });
    await expect(protoVerifier.verify(without)).rejects.toMatchObject({ rejection: 'missing_claim' });
  });

  it('refuses with InvalidToken naming the reason', async () => {
    const refused = verifier.verify(await issuers.ci.token(pipelineSub, { ...job, run_id: undefined }, { now }));
    await expect(refused).rejects.toBeInstanceOf(InvalidToken);
    await expect(refused).rejects.toMatchObject({ rejection: 'missing_claim', internal: { claim: 'run_id' } });
  });
});

describe('claims that refuse an identity, through the app', () => {
  let t: TestBroker;
  beforeAll(async () => {
    t = await startTestBroker({ configure: shapes });
  });
  afterAll(async () => {
    await t.close();
  });

  function lastRejection(): string | undefined {
    const line = [...t.logs].reverse().find((l) => l.includes('"rejection"'));
    return line ? (JSON.parse(line) as { rejection: string }).rejection : undefined;
  }
  const ask = async (token: string) => t.http.post('/v1/credentials').set(bearer(token)).send(body);
  const workload = (claims: Record<string, unknown>) => t.issuers.ci.token(pipelineSub, { ...job, ...claims }, { now: t.clock() });
  const person = (claims: Record<string, unknown>) => t.issuers.sso.token('alice', { groups: ['on-call'], preferred_username: 'alice', ...claims }, { now: t.clock() });
  async function expectRefused(token: string, rejection: string) {
    const response = await ask(token);
    expect(response.status).toBe(401);
    expect(response.headers['www-authenticate']).toBe('Bearer error="invalid_token"');
    expect(response.body.detail).toBe('The identity token was not accepted.');
    expect(lastRejection()).toBe(rejection);
  }

  it('accepts the job with every claim its issuer asks for (the control)', async () => {
    expect((await ask(await workload({}))).status).toBe(201);
    expect((await ask(await person({}))).status).not.toBe(401);
  });

  it('refuses a workload token without its initiator, or with one that is empty or not a string', async () => {
    await expectRefused(await workload({ actor: undefined }), 'missing_claim');
    await expectRefused(await workload({ actor: null }), 'missing_claim');
    await expectRefused(await workload({ actor: '' }), 'missing_claim');
    // The attacker: a claim of another type, which a lenient reader would take as "no initiator".
    for (const actor of [42, true, ['bob'], { login: 'bob' }]) await expectRefused(await workload({ actor }), 'invalid_claim');
    // A name of invisible characters only names no one.
    await expectRefused(await workload({ actor: '\u200B\u2060 ' }), 'invalid_claim');
  });

  it('refuses a person token without its username, or with one that is empty or not a string', async () => {
    // Leaving the claim out must not make its holder nobody, who could then approve their own job.
    await expectRefused(await person({ preferred_username: undefined }), 'missing_claim');
    await expectRefused(await person({ preferred_username: '' }), 'missing_claim');
    for (const preferred_username of [7, false, ['alice'], { name: 'alice' }]) await expectRefused(await person({ preferred_username }), 'invalid_claim');
    await expectRefused(await person({ preferred_username: '\uFEFF' }), 'invalid_claim');
  });

  it('refuses a job token without a bound claim, or with one that is not a string, number or boolean', async () => {
    await expectRefused(await workload({ run_id: undefined }), 'missing_claim');
    await expectRefused(await workload({ run_id: null }), 'missing_claim');
    await expectRefused(await workload({ run_id: '' }), 'missing_claim');
    for (const run_id of [['7781'], { id: '7781' }]) await expectRefused(await workload({ run_id }), 'invalid_claim');
    for (const run_id of [7781, false, Number.MAX_SAFE_INTEGER]) expect((await ask(await workload({ run_id }))).status).toBe(201);
  });

  it('refuses a numeric bound claim that parsing may change: past 2^53 - 1, or a fraction', async () => {
    // Parsed to a double, 9007199254740993 becomes 9007199254740992: two runs, one job.
    for (const run_id of [2 ** 53, -(2 ** 53), 1e21, 7781.5]) await expectRefused(await workload({ run_id }), 'invalid_claim');
  });

  it('refuses a nested bound claim spelled as a flat claim name, or missing inside its object', async () => {
    // The attacker cannot add a nested claim to its token, but may control a flat one named like it.
    await expectRefused(await workload({ 'kubernetes.io': { namespace: 'ci' }, 'kubernetes.io.pod.uid': 'pod-1' }), 'missing_claim');
    await expectRefused(await workload({ 'kubernetes.io': { namespace: 'ci', pod: {} } }), 'missing_claim');
    await expectRefused(await workload({ 'kubernetes.io': { namespace: 'ci', pod: [{ uid: 'pod-1' }] } }), 'missing_claim');
    await expectRefused(await workload({ 'kubernetes.io': { namespace: 'ci', pod: { uid: { v: 1 } } } }), 'invalid_claim');
  });

  it('refuses a token without a nested required claim, however else it is spelled', async () => {
    await expectRefused(await workload({ 'kubernetes.io': { pod: { uid: 'pod-1' } }, 'kubernetes.io.namespace': 'ci' }), 'missing_claim');
    await expectRefused(await workload({ 'kubernetes.io': { namespace: '', pod: { uid: 'pod-1' } } }), 'missing_claim');
  });

  it('refuses a token with a string that is not well-formed Unicode anywhere in its claims', async () => {
    const lone = '\uD800';
    const bad = [
      { actor: `bob${lone}` },
      { note: `x${lone}` },
      { groups: ['ok', `\uDC00x`] },
      { 'kubernetes.io': { namespace: 'ci', pod: { uid: 'pod-1' }, labels: { app: `a${lone}` } } },
      { [`claim${lone}`]: 'x' },
      { deep: [[[{ v: `${lone}` }]]] },
    ];
    for (const claims of bad) await expectRefused(await workload(claims), 'invalid_claim');
    await expectRefused(await t.issuers.ci.token(`${pipelineSub}${lone}`, job, { now: t.clock() }), 'invalid_claim');
    // A well-formed pair of surrogates is an ordinary character.
    expect((await ask(await workload({ note: '\uD83D\uDE00' }))).status).toBe(201);
  });
});
