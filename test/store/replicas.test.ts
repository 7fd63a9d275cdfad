import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLocalJWKSet, decodeJwt, exportJWK, generateKeyPair, jwtVerify, type JSONWebKeySet } from 'jose';
import { signDpopProof } from '../../src/dpop/index.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyStoredChain } from '../../src/audit/index.js';
import { openStore, type Store } from '../../src/store/index.js';
import YAML from 'yaml';
import { KEY_ENCRYPTION_KEY_ENV } from '../../src/tokens/index.js';
import { BROKER_ISSUER, baseConfig, createTestIssuers, TEST_KEY_ENCRYPTION_KEY, type TestIssuers } from '../helpers/broker.js';
import { createTestDatabase, ENGINE, type TestDatabase } from '../helpers/engine.js';
import { killBroker, startBrokerProcess, startProcess, until, type BrokerProcess } from '../helpers/process.js';

/**
 * CONTRACT section 5: several broker processes on one database (replicas on PostgreSQL, several
 * processes on one SQLite file) keep every guarantee: each check-then-write is atomic across
 * them, the audit log stays one chain, and the JWKS of any of them lists the keys of all. They
 * start together on an empty database, each with a key directory of its own and the one
 * key-encryption key (env BROKER_KEY_ENCRYPTION_KEY): the signing keys are the cluster's, kept
 * sealed in the store, so each is ready within seconds although publishAhead is 10 minutes.
 * Load goes through all three.
 */

const REPLICAS = 3;
let dir: string;
let db: TestDatabase;
let issuers: TestIssuers;
let replicas: (BrokerProcess & { url: string })[];
let store: Store;
let readyAfterMs: number;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'jit-replicas-'));
  db = await createTestDatabase(dir);
  issuers = await createTestIssuers();
  const config = (n: number) => {
    const base = baseConfig(dir, issuers, db.url) as Record<string, any>;
    return {
      ...base,
      // A model's lifecycle, for the duties race: evaluate (the ml pipeline) and register (the registry job).
      scopes: [...base.scopes, { name: 'model:evaluate', risk: 'low', maxTtl: '10m' }, { name: 'model:register', risk: 'high', maxTtl: '10m', approvals: 1 }],
      policies: [
        ...base.policies,
        { id: 'evaluation', match: { issuer: 'ci', subject: 'repo:acme/ml:*' }, scopes: ['model:evaluate'] },
        { id: 'evaluators', match: { issuer: 'sso', claims: { groups: 'evaluators' } }, scopes: ['model:evaluate'] },
        { id: 'registry', match: { issuer: 'ci', subject: 'repo:acme/registry:*' }, scopes: ['model:register'] },
      ],
      duties: [{ name: 'model-release', type: 'model', steps: [{ name: 'evaluate', scopes: ['model:evaluate'] }, { name: 'register', scopes: ['model:register'] }] }],
      // Each its own key directory, as on machines of their own; the key-encryption key comes from the environment.
      signing: { algorithm: 'ES256', rotateEvery: '24h', publishAhead: '10m', keyDir: join(dir, `keys-${n}`) },
      limits: { requestsPerMinute: 1_000_000, liveGrants: 1_000_000, pendingRequests: 1_000_000 },
    };
  };
  // All at once on an empty database: one of them makes the schema and the cluster's first key.
  replicas = await Promise.all(Array.from({ length: REPLICAS }, (_, n) => startBrokerProcess(dir, `replica-${n}`, config(n), { [KEY_ENCRYPTION_KEY_ENV]: TEST_KEY_ENCRYPTION_KEY })));
  // Ready within seconds of listening, not publishAhead: none waits for a key of its own.
  const listening = Date.now();
  await until(async () => (await Promise.all(replicas.map(async (replica) => (await fetch(`${replica.url}/readyz`)).ok))).every(Boolean), 10_000);
  readyAfterMs = Date.now() - listening;
  store = await openStore(db.url, Date.now);
}, 60_000);

afterAll(async () => {
  for (const replica of replicas ?? []) if (replica.child.exitCode === null) replica.child.kill('SIGTERM');
  await Promise.all((replicas ?? []).map((replica) => replica.exited));
  await store?.close();
  await db?.drop();
  rmSync(dir, { recursive: true, force: true });
});

const at = (i: number) => replicas[i % REPLICAS] as BrokerProcess & { url: string };
const call = async (i: number, path: string, token: string, body?: unknown) => {
  const response = await fetch(`${at(i).url}${path}`, {
    method: body === undefined && !path.endsWith('/token') ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, body: (await response.json().catch(() => ({}))) as Record<string, any> };
};
const ml = (sub: string, actor: string) =>
  issuers.ci.token(sub, { repository: 'acme/ml', ref: 'refs/heads/main', actor });
const read = { task_id: 'build', scopes: ['artifacts:read'], audience: 'registry.acme.internal' };

describe(`${REPLICAS} broker processes on one ${ENGINE} database`, () => {
  it('started together, each with a key directory of its own, are all ready within seconds', () => {
    expect(readyAfterMs).toBeLessThan(10_000);
    for (const n of [0, 1, 2]) expect(existsSync(join(dir, `keys-${n}`))).toBe(false); // the private key lives sealed in the store
  });

  it('issue tokens with distinct jtis that every replica\'s JWKS verifies', async () => {
    const token = await issuers.ci.token('repo:acme/app:ref:refs/heads/main', { repository: 'acme/app', actor: 'pat' });
    const issued = await Promise.all(Array.from({ length: 60 }, (_, i) => call(i, '/v1/credentials', token, read)));
    expect(issued.map((r) => r.status)).toEqual(Array(60).fill(201));
    const tokens = issued.map((r) => r.body.access_token as string);
    expect(new Set(tokens.map((t) => decodeJwt(t).jti)).size).toBe(60);
    const kids = new Set(tokens.map((t) => JSON.parse(Buffer.from(t.split('.')[0] as string, 'base64url').toString()).kid));
    expect(kids.size).toBe(1); // every replica signs with the cluster's key
    for (const replica of replicas) {
      const jwks = (await (await fetch(`${replica.url}/.well-known/jwks.json`)).json()) as JSONWebKeySet;
      const keys = createLocalJWKSet(jwks);
      for (const t of tokens) await expect(jwtVerify(t, keys, { issuer: BROKER_ISSUER })).resolves.toBeTruthy();
    }
  });

  it('refuse a replica given the wrong key-encryption key: exit 78, one line naming the GCM failure, no stack trace', async () => {
    const wrongKey = randomBytes(32).toString('base64');
    const base = baseConfig(dir, issuers, db.url) as Record<string, any>;
    const config = { ...base, signing: { algorithm: 'ES256', keyDir: join(dir, 'keys-wrong') } };
    writeFileSync(join(dir, 'wrong.yaml'), YAML.stringify(config));
    const { PORT: _port, BROKER_DB: _db, BROKER_CONFIG: _config, ...inherited } = process.env;
    const wrong = await startProcess(['--config', join(dir, 'wrong.yaml')], { ...(inherited as Record<string, string>), PORT: '0', [KEY_ENCRYPTION_KEY_ENV]: wrongKey }, { replaceEnv: true });
    expect(await wrong.exited).toBe(78);
    expect(wrong.output.stderr).toMatch(/^jit-broker: signing key \S+ in the store cannot be opened: AES-256-GCM authentication failed/);
    expect(wrong.lines().find((line) => line.level === 'fatal')).toMatchObject({ code: 'ERR_KEK_MISMATCH', msg: 'the broker will not start' });
    const output = wrong.output.stdout + wrong.output.stderr;
    expect(output).not.toMatch(/\n\s+at /);
    expect(output).not.toContain(wrongKey);
    expect(output).not.toContain(TEST_KEY_ENCRYPTION_KEY);
    expect(output).not.toContain('broker listening');
  });

  it('never deadlock: many callers at once on every replica, in opposite orders, all issued, no conflict reported', async () => {
    // The pattern that deadlocked batches of two replicas (issue 28): each replica's batch holds
    // the locks of many callers, and another replica's batch wants the same callers in another
    // order. Taken all at once in one canonical order, they only ever wait, never in a cycle.
    const callers = await Promise.all(
      Array.from({ length: 16 }, (_, n) => issuers.ci.token(`repo:acme/app:ref:refs/heads/order-${n}`, { repository: 'acme/app', actor: `orderer-${n}` })),
    );
    const orders = [callers, [...callers].reverse(), [...callers.slice(8), ...callers.slice(0, 8)]];
    for (let round = 0; round < 6; round += 1) {
      const answers = await Promise.all(orders.flatMap((order, r) => order.map((token) => call(r, '/v1/credentials', token, read))));
      expect(answers.map((answer) => answer.status)).toEqual(Array(REPLICAS * callers.length).fill(201));
    }
    for (const replica of replicas) {
      const metrics = await (await fetch(`${replica.url}/metrics`)).text();
      expect(metrics).toContain('broker_store_conflicts_total{kind="deadlock"} 0');
      expect(metrics).toContain('broker_store_conflicts_total{kind="serialization_failure"} 0');
    }
  });

  it('let exactly one side of each toxic pair through, whichever replicas the two requests reach', async () => {
    const pairs = 12;
    const outcomes = await Promise.all(
      Array.from({ length: pairs }, async (_, n) => {
        const job = await ml(`repo:acme/ml:ref:refs/heads/race-${n}`, `racer-${n}`); // one person per pair
        const [train, deploy] = await Promise.all([
          call(n, '/v1/credentials', job, { task_id: 'train', scopes: ['model:train'], audience: 'registry.acme.internal' }),
          call(n + 1, '/v1/credentials', job, { task_id: 'deploy', scopes: ['model:deploy'], audience: 'registry.acme.internal' }),
        ]);
        return [train.status, deploy.status];
      }),
    );
    for (const [train, deploy] of outcomes) {
      const won = [train === 201, deploy === 202].filter(Boolean).length;
      expect(won, `train ${train}, deploy ${deploy}`).toBe(1);
      expect([train, deploy]).toContain(403);
    }
  });

  it('let one step of each object through when one person asks for two steps of it at once on two replicas (duties)', async () => {
    const objects = 12;
    const outcomes = await Promise.all(
      Array.from({ length: objects }, async (_, n) => {
        const person = `duty-racer-${n}`;
        const trainer = await ml(`repo:acme/ml:ref:refs/heads/duty-${n}`, person);
        const registry = await issuers.ci.token('repo:acme/registry:ref:refs/heads/main', { repository: 'acme/registry', actor: person });
        const details = [{ type: 'model', identifier: `model-${n}` }];
        const [train, register] = await Promise.all([
          call(n, '/v1/credentials', trainer, { task_id: 'evaluate', scopes: ['model:evaluate'], audience: 'registry.acme.internal', authorization_details: details }),
          call(n + 1, '/v1/credentials', registry, { task_id: 'register', scopes: ['model:register'], audience: 'registry.acme.internal', authorization_details: details }),
        ]);
        return [train.status, register.status];
      }),
    );
    for (const [train, register] of outcomes) {
      const won = [train === 201, register === 202].filter(Boolean).length;
      expect(won, `train ${train}, register ${register}`).toBe(1);
      expect([train, register]).toContain(403);
    }
  });

  it('let one through when a person approves one step of an object on one replica and asks for another step on another', async () => {
    const objects = 12;
    const outcomes = await Promise.all(
      Array.from({ length: objects }, async (_, n) => {
        const details = [{ type: 'model', identifier: `approved-model-${n}` }];
        const registry = await issuers.ci.token('repo:acme/registry:ref:refs/heads/main', { repository: 'acme/registry', actor: `registrar-${n}` });
        const pending = await call(n, '/v1/credentials', registry, { task_id: 'register', scopes: ['model:register'], audience: 'registry.acme.internal', authorization_details: details });
        expect(pending.status).toBe(202);
        const person = await issuers.sso.token(`approver-${n}`, { groups: ['approvers', 'evaluators'], preferred_username: `approver-${n}` });
        const [approve, evaluate] = await Promise.all([
          call(n, `/v1/credentials/${pending.body.request_id}/approvals`, person, { decision: 'approve', reason: 'ok', digest: pending.body.digest }),
          call(n + 1, '/v1/credentials', person, { task_id: 'evaluate', scopes: ['model:evaluate'], audience: 'registry.acme.internal', authorization_details: details }),
        ]);
        return [approve.status, evaluate.status];
      }),
    );
    for (const [approve, evaluate] of outcomes) {
      const won = [approve === 200, evaluate === 201].filter(Boolean).length;
      expect(won, `approve ${approve}, evaluate ${evaluate}`).toBe(1);
    }
  });

  it('make a revoked parent\'s children inactive at once on every replica', async () => {
    const job = await ml('repo:acme/ml:ref:refs/heads/line', 'pat');
    const parent = await call(0, '/v1/credentials', job, { ...read, scopes: ['artifacts:read'] });
    const form = async (i: number, path: string, fields: Record<string, string>) => {
      const response = await fetch(`${at(i).url}${path}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${await issuers.ci.token('resource-server:x', { repository: 'acme/rs', actor: 'rs' })}` }, body: new URLSearchParams(fields) });
      return (await response.json().catch(() => ({}))) as Record<string, any>;
    };
    const child = (i: number, token: string) =>
      form(i, '/oauth2/token', { grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: token, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token' });
    const first = await child(1, parent.body.access_token as string);
    const second = await child(2, first.access_token as string);
    expect((await form(0, '/oauth2/introspect', { token: second.access_token })).active).toBe(true);
    expect((await call(1, `/v1/credentials/${parent.body.request_id}/revoke`, job, { reason: 'compromised' })).status).toBe(200);
    for (let i = 0; i < REPLICAS; i += 1) {
      for (const token of [first.access_token, second.access_token]) expect(await form(i, '/oauth2/introspect', { token })).toEqual({ active: false });
    }
  });

  it('use a DPoP proof once, whichever replicas it is sent to at the same moment', async () => {
    const holder = await generateKeyPair('ES256');
    const key = { alg: 'ES256' as const, privateKey: holder.privateKey, publicJwk: await exportJWK(holder.publicKey) };
    const job = await ml('repo:acme/ml:ref:refs/heads/dpop', 'pat');
    for (let round = 0; round < 5; round += 1) {
      const dpop = await signDpopProof(key, { method: 'POST', url: `${BROKER_ISSUER}/v1/credentials` });
      const answers = await Promise.all(
        Array.from({ length: REPLICAS }, (_, i) =>
          fetch(`${at(i).url}/v1/credentials`, { method: 'POST', headers: { authorization: `Bearer ${job}`, 'content-type': 'application/json', dpop }, body: JSON.stringify(read) }),
        ),
      );
      expect(answers.map((a) => a.status).sort()).toEqual([201, ...Array(REPLICAS - 1).fill(400)]);
    }
  });

  it('keep the break-glass quota exact across replicas', async () => {
    const olga = await issuers.sso.token('olga', { groups: ['on-call'], preferred_username: 'olga' });
    const emergency = (i: number) => ({
      task_id: `incident-${i}`,
      scopes: ['model:deploy'],
      audience: 'registry.acme.internal',
      break_glass: true,
      justification: 'registry down since 03:10, rolling back model 41',
    });
    const responses = await Promise.all(Array.from({ length: 12 }, (_, i) => call(i, '/v1/credentials', olga, emergency(i))));
    expect(responses.filter((r) => r.status === 201)).toHaveLength(3);
    expect(responses.filter((r) => r.status === 429)).toHaveLength(9);
  });

  it('hand out an approved request\'s token once, however many replicas are asked', async () => {
    const job = await ml('repo:acme/ml:ref:refs/heads/main', 'collector');
    const pending = await call(0, '/v1/credentials', job, { task_id: 'deploy', scopes: ['model:deploy'], audience: 'registry.acme.internal' });
    expect(pending.status, JSON.stringify(pending.body)).toBe(202);
    const alice = await issuers.sso.token('alice', { groups: ['approvers', 'ml-release'], preferred_username: 'alice' });
    const approved = await call(1, `/v1/credentials/${pending.body.request_id}/approvals`, alice, { decision: 'approve', reason: 'ok', digest: pending.body.digest });
    expect(approved.body.status).toBe('approved');
    const collects = await Promise.all(Array.from({ length: 15 }, (_, i) => call(i, `/v1/credentials/${pending.body.request_id}/token`, job)));
    expect(collects.filter((r) => r.status === 201)).toHaveLength(1);
    expect(collects.filter((r) => r.status === 409)).toHaveLength(14);
  });

  it('record each expiry once, whichever replica\'s scheduler finds it', async () => {
    const token = await issuers.ci.token('repo:acme/app:ref:refs/heads/main', { repository: 'acme/app', actor: 'pat' });
    const grants = await Promise.all(Array.from({ length: 20 }, (_, i) => call(i, '/v1/credentials', token, { ...read, ttl_seconds: 1 })));
    const ids = grants.map((g) => g.body.request_id as string);
    const expiredOnce = async () => {
      const events = await store.events.after(0, 1_000_000);
      const expired = events.filter((e) => e.type === 'grant.expired' && ids.includes(e.requestId as string));
      return expired.length;
    };
    await until(async () => (await expiredOnce()) >= ids.length, 15_000);
    await new Promise((resolve) => setTimeout(resolve, 2_500)); // more ticks of every replica
    expect(await expiredOnce()).toBe(ids.length);
  });

  it('keep one intact chain, and lose no record of a token answered by a replica killed mid-load', { timeout: 90_000 }, async () => {
    const token = await issuers.ci.token('repo:acme/app:ref:refs/heads/main', { repository: 'acme/app', actor: 'pat' });
    const answered: string[] = [];
    let stop = false;
    const load = async (i: number) => {
      while (!stop) {
        try {
          const response = await call(i, '/v1/credentials', token, read);
          if (response.status === 201) answered.push(response.body.access_token as string);
        } catch {
          if (i % REPLICAS === 2) return; // the killed replica
        }
      }
    };
    const workers = Array.from({ length: 24 }, (_, i) => load(i));
    await until(() => answered.length >= 150, 45_000);
    killBroker(at(2));
    await at(2).exited;
    await new Promise((resolve) => setTimeout(resolve, 300));
    stop = true;
    await Promise.all(workers);

    for (const t of answered) expect(await store.issuances.get(decodeJwt(t).jti as string), 'an answered token\'s record').toBeDefined();
    const verdict = await verifyStoredChain(store.events);
    expect(verdict).toMatchObject({ ok: true });
    const head = await store.events.head();
    expect(verdict.ok && verdict.events).toBe(head?.seq); // seq 1, 2, 3, ... without a gap
  });
});
