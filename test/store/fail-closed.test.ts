import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyStoredChain } from '../../src/audit/index.js';
import { UNAVAILABLE_RETRY_AFTER_SECONDS } from '../../src/http/errors.js';
import { AGENTS_ISS, bearer, startTestBroker, withAgents, type TestBroker } from '../helpers/broker.js';
import { createTestIssuer, type TestIssuer } from '../helpers/issuer.js';
import { ENGINE } from '../helpers/engine.js';

/**
 * Fail closed on every path that issues (CONTRACT section 5: when the store cannot write, no token
 * leaves): a write of the issuance or of its audit event failing, or another process holding the
 * write lock too long, answers 503 with no token, changes nothing, and the chain stays whole.
 */

let agents: TestIssuer;
beforeAll(async () => {
  agents = await createTestIssuer(AGENTS_ISS);
});
let t: TestBroker;
/** One broker for each kind of failure: its paths run one after another on it. */
const brokerPerDescribe = () => {
  beforeAll(async () => {
    t = await startTestBroker({ configure: (c) => withAgents(c, agents) });
  });
  afterAll(async () => {
    await t?.close();
  });
};

const JWT = 'urn:ietf:params:oauth:token-type:jwt';
const ACCESS = 'urn:ietf:params:oauth:token-type:access_token';
const registry = 'registry.acme.internal';
const GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';

const counts = async () => {
  const [e] = await t.db.sql<{ n: number }>('SELECT count(*) AS n FROM audit_events');
  const [i] = await t.db.sql<{ n: number }>('SELECT count(*) AS n FROM issuances');
  const [r] = await t.db.sql<{ n: number }>("SELECT count(*) AS n FROM requests WHERE status = 'issued'");
  return { events: Number(e?.n), issuances: Number(i?.n), issued: Number(r?.n) };
};

/** Every issuance has its token.issued event and vice versa, every issued request its issuance. */
const consistent = async () => {
  const events = await t.broker.store.events.after(0, 1_000_000);
  expect(await verifyStoredChain(t.broker.store.events)).toMatchObject({ ok: true });
  const issuedJtis = new Set(events.filter((e) => e.type === 'token.issued').map((e) => e.data.jti as string));
  const rows = await t.db.sql<{ jti: string }>('SELECT jti FROM issuances');
  expect(new Set(rows.map((r) => r.jti))).toEqual(issuedJtis);
  const orphans = await t.db.sql("SELECT id FROM requests r WHERE status = 'issued' AND NOT EXISTS (SELECT 1 FROM issuances i WHERE i.request_id = r.id)");
  expect(orphans).toEqual([]);
};

type Path = { name: string; prepare: () => Promise<() => Promise<{ status: number; text: string; headers: Record<string, string> }>>; ok: number };

const form = (fields: Record<string, string>) => t.http.post('/oauth2/token').type('form').send({ grant_type: GRANT, ...fields });

const paths: Path[] = [
  {
    name: 'POST /v1/credentials',
    ok: 201,
    prepare: async () => {
      const id = await t.as.pipeline();
      return () => t.http.post('/v1/credentials').set(bearer(id)).send({ task_id: 'x', scopes: ['artifacts:read'], audience: registry });
    },
  },
  {
    name: '/oauth2/token',
    ok: 200,
    prepare: async () => {
      const id = await t.as.pipeline();
      return () => form({ subject_token: id, subject_token_type: JWT, scope: 'artifacts:read', audience: registry, task_id: 'x' });
    },
  },
  {
    name: 'break-glass',
    ok: 201,
    prepare: async () => {
      const id = await t.as.pipeline();
      return () =>
        t.http.post('/v1/credentials').set(bearer(id)).send({ task_id: 'bg', scopes: ['logs:read'], audience: registry, break_glass: true, justification: 'production is down, incident 4711 needs logs' });
    },
  },
  {
    name: 'collection after approval',
    ok: 201,
    prepare: async () => {
      const ml = await t.as.ml();
      const asked = await t.http.post('/v1/credentials').set(bearer(ml)).send({ task_id: 'deploy', scopes: ['model:deploy'], audience: registry });
      expect(asked.status).toBe(202);
      const approver = await t.as.person('alice', ['approvers', 'ml-release']);
      const decided = await t.http
        .post(`/v1/credentials/${asked.body.request_id}/approvals`)
        .set(bearer(approver))
        .send({ decision: 'approve', reason: 'ok', digest: asked.body.digest });
      expect(decided.status).toBe(200);
      return () => t.http.post(`/v1/credentials/${asked.body.request_id}/token`).set(bearer(ml));
    },
  },
  {
    name: 'child token',
    ok: 200,
    prepare: async () => {
      const id = await t.as.pipeline();
      const parent = await t.http.post('/v1/credentials').set(bearer(id)).send({ task_id: 'p', scopes: ['artifacts:read'], audience: registry });
      expect(parent.status).toBe(201);
      return () => form({ subject_token: parent.body.access_token, subject_token_type: ACCESS, scope: 'artifacts:read', audience: registry });
    },
  },
  {
    name: 'delegated',
    ok: 200,
    prepare: async () => {
      const subject = await t.as.person('alice', ['ml-eng']);
      const actor = await agents.token('agent:release-1', { owner: 'olivia' }, { now: t.clock() });
      return () => form({ subject_token: subject, subject_token_type: JWT, actor_token: actor, actor_token_type: JWT, scope: 'artifacts:read', audience: registry, task_id: 'assist' });
    },
  },
];

const failures: { name: string; inject: () => Promise<() => Promise<void>> }[] = [
  { name: 'issuance insert fails', inject: () => t.db.failWrites('issuances', 'INSERT') },
  { name: 'audit append fails', inject: () => t.db.failWrites('audit_events', 'INSERT') },
];

describe.each(failures)('$name', ({ inject }) => {
  brokerPerDescribe();
  it.each(paths)('$name: 503, no token, nothing changed, the chain whole; then it works', async ({ prepare, ok }) => {
    const go = await prepare();
    const before = await counts();
    const undo = await inject();
    let response;
    try {
      response = await go();
    } finally {
      await undo();
    }
    expect(response.status, response.text).toBe(503);
    // RFC 9110 section 10.2.3: when to ask again, for clients and load balancers.
    expect(response.headers['retry-after']).toBe(String(UNAVAILABLE_RETRY_AFTER_SECONDS));
    expect(response.text).not.toMatch(/eyJ/);
    expect(response.text).not.toMatch(/at .*\.(ts|js):\d+/);
    expect(await counts()).toEqual(before);
    await consistent();
    const again = await go();
    expect(again.status, again.text).toBe(ok);
    await consistent();
  });
});

describe.runIf(ENGINE === 'sqlite')('the write lock held by another connection', () => {
  brokerPerDescribe();
  it.each(paths)('$name: 503 and no token', { timeout: 30_000 }, async ({ prepare }) => {
    const go = await prepare();
    const before = await counts();
    await t.db.sql('BEGIN EXCLUSIVE');
    const ticker = setInterval(() => t.clock.advance(500), 20);
    let response;
    try {
      response = await go();
    } finally {
      clearInterval(ticker);
      await t.db.sql('ROLLBACK');
    }
    expect(response.status, response.text).toBe(503);
    expect(response.headers['retry-after']).toBe(String(UNAVAILABLE_RETRY_AFTER_SECONDS));
    expect(response.text).not.toMatch(/eyJ/);
    expect(await counts()).toEqual(before);
    await consistent();
    const again = await go();
    // The test's clock ran on while the lock was held: the identity tokens may have aged past use.
    expect(again.status, again.text).toBeLessThan(500);
  });
});
