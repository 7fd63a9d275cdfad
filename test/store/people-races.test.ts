import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseConfig, createTestIssuers, type TestIssuers } from '../helpers/broker.js';
import { createTestDatabase, type TestDatabase } from '../helpers/engine.js';
import { startBrokerProcess, until, type BrokerProcess } from '../helpers/process.js';
import { createTestIssuer, type TestIssuer } from '../helpers/issuer.js';

/**
 * CONTRACT section 5: every check-then-write holds across processes and replicas. Here each rule
 * that counts people is raced through two broker processes on one store, one person on each side
 * under two identities (a CI job they started, their SSO login, the two spelled differently):
 * limits, a toxic pair at two person issuers, and one person's two approvals.
 */

/** Races per rule: each pair of requests at once, one on each process. */
const ROUNDS = 8;

let dir: string;
let db: TestDatabase;
let issuers: TestIssuers;
let sso2: TestIssuer;
let procs: (BrokerProcess & { url: string })[] = [];

const setup = async (limits: Record<string, number>) => {
  dir = mkdtempSync(join(tmpdir(), 'jit-people-race-'));
  db = await createTestDatabase(dir);
  issuers = await createTestIssuers();
  sso2 = await createTestIssuer('https://sso2.test');
  const config = () => {
    const base = baseConfig(dir, issuers, db.url) as Record<string, any>;
    base.identity.issuers.push({ name: 'sso2', kind: 'person', issuer: sso2.iss, jwks: sso2.jwks, audiences: ['jit-broker'], algorithms: ['ES256'], usernameClaim: 'preferred_username' });
    base.roles.push({ role: 'approver', match: { issuer: 'sso2', claims: { groups: 'approvers' } } });
    base.policies.push({ id: 'builders', match: { issuer: 'sso', claims: { groups: 'builders' } }, scopes: ['artifacts:read', 'db:admin'] });
    base.policies.push({ id: 'trainers', match: { issuer: 'sso2', claims: { groups: 'trainers' } }, scopes: ['model:train'] });
    return { ...base, limits: { requestsPerMinute: 1_000_000, liveGrants: 1_000_000, pendingRequests: 1_000_000, ...limits } };
  };
  procs = await Promise.all([0, 1].map((n) => startBrokerProcess(dir, `p-${n}`, config())));
  await until(async () => (await Promise.all(procs.map(async (p) => (await fetch(`${p.url}/readyz`)).ok))).every(Boolean), 20_000);
};
const teardown = async () => {
  for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGTERM');
  await Promise.all(procs.map((p) => p.exited));
  await db?.drop();
  rmSync(dir, { recursive: true, force: true });
};
const call = async (i: number, path: string, token: string, body?: unknown) => {
  const response = await fetch(`${procs[i % 2]!.url}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, body: (await response.json().catch(() => ({}))) as Record<string, any> };
};
const read = { task_id: 'build', scopes: ['artifacts:read'], audience: 'registry.acme.internal' };
// One person, two identities: a CI job they started, and their SSO login (its username upper-cased).
const job = (actor: string, n: number) => issuers.ci.token(`repo:acme/app:ref:refs/heads/r-${n}`, { repository: 'acme/app', actor });
const login = (username: string) => issuers.sso.token(`sub-${username}`, { groups: ['builders'], preferred_username: username.toUpperCase() });

describe('liveGrants: 1, two processes, one person through two identities', () => {
  beforeAll(() => setup({ liveGrants: 1 }), 60_000);
  afterAll(teardown);
  it('admits at most one', async () => {
    const out = await Promise.all(Array.from({ length: ROUNDS }, async (_, n) => {
      const [a, b] = await Promise.all([call(0, '/v1/credentials', await job(`live-${n}`, n), read), call(1, '/v1/credentials', await login(`live-${n}`), read)]);
      return [a.status, b.status];
    }));
    for (const pair of out) expect(pair.filter((s) => s === 201).length, JSON.stringify(out)).toBe(1);
  }, 60_000);
});

describe('requestsPerMinute: 1, two processes, one person through two identities', () => {
  beforeAll(() => setup({ requestsPerMinute: 1 }), 60_000);
  afterAll(teardown);
  it('admits at most one', async () => {
    const out = await Promise.all(Array.from({ length: ROUNDS }, async (_, n) => {
      const [a, b] = await Promise.all([call(0, '/v1/credentials', await job(`rate-${n}`, n), read), call(1, '/v1/credentials', await login(`rate-${n}`), read)]);
      return [a.status, b.status];
    }));
    for (const pair of out) expect(pair.filter((s) => s === 201).length, JSON.stringify(out)).toBe(1);
  }, 60_000);
});

describe('pendingRequests: 1, two processes', () => {
  beforeAll(() => setup({ pendingRequests: 1 }), 60_000);
  afterAll(teardown);
  it('holds for one person through two identities', async () => {
    const dbJob = (actor: string, n: number) => issuers.ci.token(`repo:acme/db:ref:refs/heads/r-${n}`, { repository: 'acme/db', actor });
    const out = await Promise.all(Array.from({ length: ROUNDS }, async (_, n) => {
      const [a, b] = await Promise.all([
        call(0, '/v1/credentials', await dbJob(`pend-${n}`, n), { task_id: 'm', scopes: ['db:admin'], audience: 'db' }),
        call(1, '/v1/credentials', await login(`pend-${n}`), { task_id: 'm', scopes: ['db:admin'], audience: 'db' }),
      ]);
      return [a.status, b.status];
    }));
    for (const pair of out) expect(pair.filter((s) => s === 202).length, JSON.stringify(out)).toBe(1);
  }, 60_000);
  it('a toxic pair asked by one person at two issuers at once: one side is refused', async () => {
    const out = await Promise.all(Array.from({ length: ROUNDS }, async (_, n) => {
      const ml = await issuers.ci.token(`repo:acme/ml:ref:refs/heads/r-${n}`, { repository: 'acme/ml', ref: 'refs/heads/main', actor: `tox-${n}` });
      const trainer = await sso2.token(`s-${n}`, { groups: ['trainers'], preferred_username: `TOX-${n}` });
      const [a, b] = await Promise.all([
        call(0, '/v1/credentials', ml, { task_id: 'd', scopes: ['model:deploy'], audience: 'registry.acme.internal' }),
        call(1, '/v1/credentials', trainer, { task_id: 't', scopes: ['model:train'], audience: 'registry.acme.internal' }),
      ]);
      return [a.status, b.status];
    }));
    for (const [a, b] of out) expect([a === 202, b === 201].filter(Boolean).length, JSON.stringify(out)).toBe(1);
  }, 60_000);
  it('one person approving through two identities on two processes at once counts once', async () => {
    const out = await Promise.all(Array.from({ length: ROUNDS }, async (_, n) => {
      const dbJob = await issuers.ci.token(`repo:acme/db:ref:refs/heads/a-${n}`, { repository: 'acme/db', actor: `req-${n}` });
      const pending = await call(0, '/v1/credentials', dbJob, { task_id: 'm', scopes: ['db:admin'], audience: 'db' });
      const a1 = await issuers.sso.token(`ap-${n}`, { groups: ['approvers'], preferred_username: `appr-${n}` });
      const a2 = await sso2.token(`other-${n}`, { groups: ['approvers'], preferred_username: `Appr-${n}` });
      const body = { decision: 'approve', reason: 'ok', digest: pending.body.digest };
      const [x, y] = await Promise.all([call(0, `/v1/credentials/${pending.body.request_id}/approvals`, a1, body), call(1, `/v1/credentials/${pending.body.request_id}/approvals`, a2, body)]);
      const view = await call(0, `/v1/credentials/${pending.body.request_id}`, dbJob);
      return [pending.status, x.status, y.status, view.body.status];
    }));
    for (const [p, x, y, status] of out) {
      expect(p).toBe(202);
      expect([x, y].sort(), JSON.stringify(out)).toEqual([200, 409]);
      expect(status).toBe('pending_approval');
    }
  }, 60_000);
});
