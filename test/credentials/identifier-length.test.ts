import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_IDENTIFIER_BYTES } from '../../src/identity/index.js';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { allEvents } from '../helpers/records.js';

/**
 * The identifiers a request is recorded and indexed under (the `sub`, the person key, the job's
 * bound claims) are at most MAX_IDENTIFIER_BYTES each: PostgreSQL caps an index entry at 2,704
 * bytes, and an identity past it answered 503 there where SQLite issued. Random text, which no
 * compression shrinks, at the limit is issued on both engines and found by an auditor; a byte more
 * is an identity refused (401), recording nothing.
 */

const SUB_PREFIX = 'repo:acme/';
/** Incompressible text of exactly `bytes` bytes, lowercase (person keys are case-folded). */
const random = (bytes: number) => randomBytes(bytes).toString('hex').slice(0, bytes);
const body = { task_id: 'long', scopes: ['artifacts:read'], audience: 'registry.acme.internal' };

let t: TestBroker;
beforeAll(async () => {
  t = await startTestBroker({
    configure(config: Record<string, any>) {
      config.identity.issuers[0].bindClaims = ['run_id'];
      config.policies.push({ id: 'any-acme-repo', match: { issuer: 'ci', subject: 'repo:acme/*' }, scopes: ['artifacts:read'] });
    },
  });
});
afterAll(async () => t?.close());

// The ci issuer's person key is `n:ci:<initiator>`; its job key the canonical JSON {"run_id":"..."}.
const atLimit = {
  sub: `${SUB_PREFIX}${random(MAX_IDENTIFIER_BYTES - SUB_PREFIX.length)}`,
  actor: random(MAX_IDENTIFIER_BYTES - 'n:ci:'.length),
  run_id: random(MAX_IDENTIFIER_BYTES - '{"run_id":""}'.length),
};

describe('identifiers at most MAX_IDENTIFIER_BYTES', () => {
  it('issues to an identity whose sub, person key and job key are all at the limit, and an auditor finds it by subject', async () => {
    const token = await t.as.pipeline({ actor: atLimit.actor, run_id: atLimit.run_id }, atLimit.sub);
    const response = await t.http.post('/v1/credentials').set(bearer(token)).send(body);
    expect(response.status).toBe(201);
    const auditor = await t.as.person('ivy', ['auditors']);
    const found = await t.http.get(`/v1/audit/issuances?subject=${encodeURIComponent(atLimit.sub)}`).set(bearer(auditor));
    expect(found.status).toBe(200);
    expect(found.body.items.map((item: { request_id: string }) => item.request_id)).toEqual([response.body.request_id]);
  });

  it.each([
    ['sub is a byte longer', { actor: 'pat', run_id: '1' }, `${atLimit.sub}a`],
    ['person key is a byte longer', { actor: `${atLimit.actor}a`, run_id: '1' }, 'repo:acme/app'],
    ['bound claims are a byte longer', { actor: 'pat', run_id: `${atLimit.run_id}a` }, 'repo:acme/app'],
    ['sub is 5,000 bytes long', { actor: 'pat', run_id: '1' }, `${SUB_PREFIX}${random(5000)}`],
  ])('refuses an identity whose %s (401), recording nothing', async (_what, claims, sub) => {
    const before = (await allEvents(t)).length;
    const response = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline(claims, sub))).send(body);
    expect(response.status).toBe(401);
    expect(response.headers['www-authenticate']).toMatch(/invalid_token/);
    expect((await allEvents(t)).length).toBe(before);
  });
});
