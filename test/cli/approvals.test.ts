import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describe as describeRequest, type RequestView } from '../../src/cli/views.js';
import { shownJson } from '../../src/cli/io.js';
import { AGENTS_ISS, bearer, liveClock, listen, startTestBroker, withAgents, withModelRelease, type TestBroker } from '../helpers/broker.js';
import { createTestIssuer, type TestIssuer } from '../helpers/issuer.js';
import { jit, type JitOptions } from '../helpers/jit-process.js';

/**
 * What `jit approvals` and `jit approve` show an approver: every field the request's digest
 * covers, since a decision bound to the digest approves all of them, each value delimited and
 * made safe for the terminal.
 */

let t: TestBroker;
let server: Awaited<ReturnType<typeof listen>>;
let agents: TestIssuer;

beforeAll(async () => {
  agents = await createTestIssuer(AGENTS_ISS);
  t = await startTestBroker({
    clock: liveClock(),
    configure(config: Record<string, any>) {
      withModelRelease(config);
      withAgents(config, agents);
      config.identity.issuers.find((issuer: { name: string }) => issuer.name === 'ci').bindClaims = ['run_id'];
    },
  });
  server = await listen(t);
});
afterAll(async () => {
  await server?.close();
  await t?.close();
});

const as = (identity: string): JitOptions => ({ env: { BROKER_URL: server.url, BROKER_IDENTITY_TOKEN: identity } });
const approver = () => t.as.person('alice', ['approvers', 'ml-release']);

describe('what an approver is shown', () => {
  it('lists the objects, who started the job, the job and the agents acting, and approve shows them before deciding', async () => {
    const registry = await t.issuers.ci.token('repo:acme/registry:ref:refs/heads/main', { repository: 'acme/registry', actor: 'mallory', run_id: '4711' }, { now: t.clock() });
    const registering = await t.http.post('/v1/credentials').set(bearer(registry)).send({
      task_id: 'register-7',
      scopes: ['model:register'],
      audience: 'registry.acme.internal',
      authorization_details: [{ type: 'model', identifier: 'fraud-PRODUCTION-critical', actions: ['overwrite', 'read write'] }],
    });
    expect(registering.status, JSON.stringify(registering.body)).toBe(202);
    const registerId = registering.body.request_id as string;

    const delegated = await t.http.post('/oauth2/token').type('form').send({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: await t.as.person('erin', ['ml-eng']),
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      actor_token: await agents.token('agent:release-1', { owner: 'olivia' }, { now: t.clock() }),
      actor_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      scope: 'model:deploy',
      audience: 'registry.acme.internal',
      task_id: 'deploy-7',
      authorization_details: JSON.stringify([{ type: 'model', identifier: 'churn-v3' }]),
    });
    expect(delegated.body.error, JSON.stringify(delegated.body)).toBe('authorization_pending');
    const deployId = delegated.body.request_id as string;

    const listed = await jit(['approvals'], as(await approver()));
    expect(listed.code).toBe(0);
    const [registerView, deployView] = [registerId, deployId].map((id) => listed.stdout.split('\n\n').find((view) => view.startsWith(`request       ${id} `)));
    expect(registerView).toContain('requester     "repo:acme/registry:ref:refs/heads/main"  [https://ci.test]\n');
    expect(registerView).toContain('started by    "mallory"\n');
    expect(registerView).toContain('job           "run_id": "4711"\n');
    expect(registerView).toContain('task          "register-7"\n');
    expect(registerView).toContain('object        "model" "fraud-PRODUCTION-critical"; actions "overwrite", "read write"\n');
    expect(deployView).toContain('requester     "erin"  [https://sso.test]\nactor         "agent:release-1"  [https://agents.test]\n');
    expect(deployView).toContain('object        "model" "churn-v3"\n');

    const decided = await jit(['approve', registerId, '--reason', 'reviewed', '--yes'], as(await approver()));
    expect(decided.code).toBe(0);
    expect(decided.stderr).toContain('object        "model" "fraud-PRODUCTION-critical"; actions "overwrite", "read write"\n');
    expect(decided.stderr).toContain('started by    "mallory"\n');
  });
});

describe('a request as the CLI describes it', () => {
  const view = (changes: Partial<RequestView>): RequestView => ({
    request_id: 'r-1',
    status: 'pending_approval',
    requester: { iss: 'https://ci.test', sub: 'repo:acme/ml' },
    task_id: 'deploy-7',
    scopes: ['model:deploy'],
    audience: 'registry.acme.internal',
    ttl_seconds: 600,
    justification: null,
    break_glass: false,
    digest: 'd'.repeat(64),
    approvals_required: 1,
    approvals: [],
    created_at: '2026-01-01T00:00:00.000Z',
    expires_at: '2026-01-01T01:00:00.000Z',
    ...changes,
  });
  const objects = (...details: NonNullable<RequestView['authorization_details']>) => describeRequest(view({ authorization_details: details }));

  it('tells apart what would read alike unquoted: one value or two, one entry or two, text or a number', () => {
    expect(objects({ type: 'model', identifier: 'a', actions: ['read write'] })).not.toBe(objects({ type: 'model', identifier: 'a', actions: ['read', 'write'] }));
    expect(objects({ type: 'model', identifier: 'a; model b' })).not.toBe(objects({ type: 'model', identifier: 'a' }, { type: 'model', identifier: 'b' }));
    expect(objects({ type: 'model', identifier: 'a", "b' })).toContain('object        "model" "a\\", \\"b"');
    expect(objects({ type: 'model' }, { type: 'dataset', identifier: 'x', locations: ['eu'], datatypes: ['pii'], privileges: ['admin'] })).toContain(
      'object        "model" with no identifier\nobject        "dataset" "x"; locations "eu"; datatypes "pii"; privileges "admin"\n',
    );
    expect(describeRequest(view({ bound_claims: { run_id: '1' } }))).not.toBe(describeRequest(view({ bound_claims: { run_id: 1 } })));
    expect(describeRequest(view({ act: { iss: 'https://agents.test', sub: 'agent:helper-1', act: { iss: 'https://agents.test', sub: 'agent:release-1' } } }))).toContain(
      'actor         "agent:helper-1"  [https://agents.test]\nfor actor     "agent:release-1"  [https://agents.test]\n',
    );
  });

  it('shows control, bidirectional and invisible characters as escapes, a new line included', () => {
    const text = objects({ type: 'model', identifier: 'fraud\u202e1v\u001b[2K', actions: ['read\nwrite'] });
    expect(text).toContain('object        "model" "fraud\\u{202e}1v\\u{1b}[2K"; actions "read\\nwrite"');
    expect(text).not.toMatch(/[\u202e\u001b]/);
  });

  it('prints JSON that parses to the same value, with those characters as JSON escapes', () => {
    const value = { sub: 'mallory\u202e\u009b2K\u{e0041}', lines: 'a\nb' };
    const json = shownJson(value);
    expect(json).not.toMatch(/[\p{Cc}\p{Cf}](?<!\n)/u);
    expect(json).toContain('"mallory\\u202e\\u009b2K\\udb40\\udc41"');
    expect(JSON.parse(json)).toEqual(value);
  });
});
