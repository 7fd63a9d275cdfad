import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, listen, startTestBroker, withAgents, type TestBroker } from '../helpers/broker.js';
import { runCli } from '../helpers/cli.js';
import { createTestIssuer, type TestIssuer } from '../helpers/issuer.js';

/**
 * CONTRACT section 4, `GET /v1/audit/entitlements`: one row per (policy, scope) the running
 * configuration grants, counting the tokens issued under it since `since`, whatever path issued
 * them (at once, approved then collected, delegated, a child, break-glass); `issued: 0` is a
 * grant nobody uses. Run on both engines, after real issuance.
 */

const DAY = 86_400_000;
const JWT = 'urn:ietf:params:oauth:token-type:jwt';
const ACCESS = 'urn:ietf:params:oauth:token-type:access_token';
const registry = 'registry.acme.internal';

let t: TestBroker;
let agents: TestIssuer;
/** When the first token of the history was issued, and when the last. */
let first: number;

type Row = { policy: string; scope: string; issued: number; last_issued_at: string | null };
const auditor = () => t.as.person('ivy', ['auditors']);
const report = async (query = '', token?: string) => t.http.get(`/v1/audit/entitlements${query}`).set(bearer(token ?? (await auditor())));
const row = (rows: Row[], policy: string, scope: string) => rows.find((r) => r.policy === policy && r.scope === scope);

beforeAll(async () => {
  agents = await createTestIssuer('https://agents.test');
  t = await startTestBroker({ configure: (config) => withAgents(config as Record<string, any>, agents) });
  const ask = async (token: string, body: Record<string, unknown>) => t.http.post('/v1/credentials').set(bearer(token)).send({ audience: registry, ...body });
  const exchange = (fields: Record<string, string>) =>
    t.http.post('/oauth2/token').type('form').send({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', audience: registry, task_id: 'assist', ...fields });

  // An old token, 40 days back: outside the default window.
  first = t.clock();
  expect((await ask(await t.as.pipeline(), { task_id: 'old', scopes: ['artifacts:read'] })).status).toBe(201);
  t.clock.advance(40 * DAY);
  // Forty days on, the signing key is long due: rotated, and its successor published ahead.
  await t.broker.scheduler.runAll();
  t.clock.advance(11 * 60_000);

  // At once: artifacts:read for the ml pipeline, which `pipelines` (first in order) and `ml-main` both grant.
  expect((await ask(await t.as.ml(), { task_id: 'build', scopes: ['artifacts:read'] })).status).toBe(201);
  // Approved, then collected.
  const pending = await ask(await t.as.ml(), { task_id: 'deploy', scopes: ['model:deploy'] });
  expect(pending.status).toBe(202);
  const approver = await t.as.person('alice', ['approvers', 'ml-release']);
  await t.http.post(`/v1/credentials/${pending.body.request_id}/approvals`).set(bearer(approver)).send({ decision: 'approve', reason: 'ok', digest: pending.body.digest });
  expect((await t.http.post(`/v1/credentials/${pending.body.request_id}/token`).set(bearer(await t.as.ml()))).status).toBe(201);
  // Break-glass.
  const glass = await ask(await t.as.pipeline(), { task_id: 'incident', scopes: ['logs:read'], break_glass: true, justification: 'INC-7: the build cache is corrupt' });
  expect(glass.status).toBe(201);
  // Delegated: an agent for an ml engineer, then a child of that token.
  const engineer = await t.as.person('erin', ['ml-eng']);
  const agent = await agents.token('agent:release-1', { owner: 'olivia' }, { now: t.clock() });
  const delegated = await exchange({ subject_token: engineer, subject_token_type: JWT, actor_token: agent, actor_token_type: JWT, scope: 'artifacts:read' });
  expect(delegated.status).toBe(200);
  expect((await exchange({ subject_token: delegated.body.access_token, subject_token_type: ACCESS, scope: 'artifacts:read' })).status).toBe(200);
});
afterAll(async () => {
  await t?.close();
});

describe('GET /v1/audit/entitlements', () => {
  it('lists every (policy, scope) the configuration grants, in its order, on one page', async () => {
    const response = await report();
    expect(response.status).toBe(200);
    expect(response.body.next_cursor).toBeNull();
    expect(response.body.since).toBe(new Date(t.clock() - 30 * DAY).toISOString());
    const grants = t.broker.config.policies.flatMap((policy) => policy.scopes.map((scope) => `${policy.id} ${scope}`));
    expect((response.body.items as Row[]).map((r) => `${r.policy} ${r.scope}`)).toEqual(grants);
  });

  it('counts each token under the first policy that granted the scope, whatever path issued it', async () => {
    const rows = (await report()).body.items as Row[];
    const now = new Date(t.clock()).toISOString();
    // The ml pipeline's artifacts:read counts under `pipelines`, first in order, not `ml-main`; the old one is outside the window.
    expect(row(rows, 'pipelines', 'artifacts:read')).toEqual({ policy: 'pipelines', scope: 'artifacts:read', issued: 1, last_issued_at: now });
    expect(row(rows, 'ml-main', 'artifacts:read')).toMatchObject({ issued: 0, last_issued_at: null });
    // Approved, then collected.
    expect(row(rows, 'ml-main', 'model:deploy')).toMatchObject({ issued: 1, last_issued_at: now });
    // Break-glass.
    expect(row(rows, 'pipelines', 'logs:read')).toMatchObject({ issued: 1 });
    // The delegated token and its child, both under the engineer's own policy.
    expect(row(rows, 'ml-eng', 'artifacts:read')).toMatchObject({ issued: 2 });
  });

  it('reports grants nobody uses with 0', async () => {
    const rows = (await report()).body.items as Row[];
    const unused = rows.filter((r) => r.issued === 0).map((r) => `${r.policy} ${r.scope}`);
    expect(unused).toEqual(['ml-main artifacts:read', 'ml-main model:train', 'dba db:admin', 'on-call logs:read', 'on-call model:deploy', 'ml-eng model:deploy']);
    expect(rows.filter((r) => r.issued === 0).every((r) => r.last_issued_at === null)).toBe(true);
  });

  it('honours since: an ISO time, earlier or later', async () => {
    const all = (await report(`?since=${new Date(first).toISOString()}`)).body;
    expect(all.since).toBe(new Date(first).toISOString());
    expect(row(all.items, 'pipelines', 'artifacts:read')).toMatchObject({ issued: 2 });
    const later = (await report(`?since=${new Date(t.clock() + 1000).toISOString()}`)).body.items as Row[];
    expect(later.every((r) => r.issued === 0)).toBe(true);
    const bad = await report('?since=yesterday');
    expect(bad.status).toBe(400);
    expect((await report('?limit=5')).status).toBe(400); // one page: no paging parameters
  });

  it('refuses anyone but auditors and admins: 403 policy_denied', async () => {
    for (const token of [await t.as.pipeline(), await t.as.person('alice', ['approvers'])]) {
      const refused = await report('', token);
      expect(refused.status).toBe(403);
      expect(refused.body.type).toMatch(/policy_denied$/);
    }
    expect((await report('', await t.as.person('ada', ['admins']))).status).toBe(200);
  });

  it('is what jit audit entitlements prints', async () => {
    const served = await listen(t);
    try {
      const env = { BROKER_URL: served.url, BROKER_IDENTITY_TOKEN: await auditor() };
      const json = await runCli(['audit', 'entitlements', '--json'], env);
      expect(json.code).toBe(0);
      expect(JSON.parse(json.stdout)).toEqual((await report()).body.items);
      // --since as a duration ago: 50 days back reaches the old token.
      const table = await runCli(['audit', 'entitlements', '--since', '50d'], env);
      expect(table.code).toBe(0);
      expect(table.stdout.split('\n')[0]).toMatch(/^POLICY\s+SCOPE\s+ISSUED\s+LAST ISSUED$/);
      expect(table.stdout).toMatch(/^pipelines\s+artifacts:read\s+2\s/m);
      expect(table.stderr).toMatch(/: 6 of 10 grants unused\n$/);
    } finally {
      await served.close();
    }
  });
});
