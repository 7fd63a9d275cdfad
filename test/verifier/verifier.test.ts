import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BrokerTokenError, createBrokerVerifier, verifyBrokerToken } from '../../src/verifier/index.js';
import { BROKER_ISSUER, bearer, listen, startTestBroker, type TestBroker } from '../helpers/broker.js';

/** The verifier resource servers import, against a broker served over HTTP. */

let t: TestBroker;
let server: Awaited<ReturnType<typeof listen>>;
beforeAll(async () => {
  t = await startTestBroker();
  server = await listen(t);
});
afterAll(async () => {
  await server.close();
  await t.close();
});

const issue = async (payload: Record<string, unknown> = {}, token?: string) =>
  (
    await t.http
      .post('/v1/credentials')
      .set(bearer(token ?? (await t.as.pipeline())))
      .send({ task_id: 'build-1', scopes: ['artifacts:read', 'logs:read'], audience: 'registry.acme.internal', ...payload })
  ).body as { request_id: string; access_token: string };

const verifier = (revocation?: 'introspect' | 'list') =>
  createBrokerVerifier({
    issuer: BROKER_ISSUER,
    brokerUrl: server.url,
    audience: 'registry.acme.internal',
    now: () => t.clock(),
    ...(revocation ? { revocation: { mode: revocation, identityToken: () => t.as.pipeline({}, 'resource-server:registry'), cacheMs: 0 } } : {}),
  });

const refusal = async (promise: Promise<unknown>) => {
  const error = await promise.then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(BrokerTokenError);
  return (error as BrokerTokenError).code;
};

describe('the exported verifier', () => {
  it('accepts a good token and returns its claims', async () => {
    const { access_token } = await issue();
    const claims = await verifier().verify(access_token, { requiredScopes: ['artifacts:read'] });
    expect(claims).toMatchObject({ sub: 'repo:acme/app:ref:refs/heads/main', scope: 'artifacts:read logs:read', client_id: 'ci' });
  });

  it('rejects a token for another audience, or lacking a scope', async () => {
    const { access_token } = await issue();
    const elsewhere = createBrokerVerifier({ issuer: BROKER_ISSUER, brokerUrl: server.url, audience: 'db.acme.internal', now: () => t.clock() });
    expect(await refusal(elsewhere.verify(access_token))).toBe('audience');
    expect(await refusal(verifier().verify(access_token, { requiredScopes: ['artifacts:read', 'artifacts:write'] }))).toBe('scope');
  });

  it('rejects an expired token', async () => {
    const { access_token } = await issue({ ttl_seconds: 60 });
    t.clock.advance(91_000); // past exp and the 30 s tolerance
    expect(await refusal(verifier().verify(access_token))).toBe('expired');
  });

  it('rejects a token without the approvals asked for, and accepts an approved one', async () => {
    const plain = await issue();
    expect(await refusal(verifier().verify(plain.access_token, { requireApprovals: true }))).toBe('approvals');

    const workload = await t.as.ml();
    const pending = await t.http.post('/v1/credentials').set(bearer(workload)).send({ task_id: 'd', scopes: ['model:deploy'], audience: 'registry.acme.internal' });
    await t.http
      .post(`/v1/credentials/${pending.body.request_id}/approvals`)
      .set(bearer(await t.as.person('alice', ['approvers', 'ml-release'])))
      .send({ decision: 'approve', reason: 'ok', digest: pending.body.digest });
    const collected = await t.http.post(`/v1/credentials/${pending.body.request_id}/token`).set(bearer(workload));
    const claims = await verifier().verify(collected.body.access_token, { requireApprovals: 1, requiredScopes: ['model:deploy'] });
    expect(claims.approvers).toEqual([expect.objectContaining({ sub: 'alice' })]);
  });

  it('rejects a revoked token through introspection or the revocation list', async () => {
    const grant = await issue();
    for (const mode of ['introspect', 'list'] as const) expect(await verifier(mode).verify(grant.access_token)).toBeTruthy();
    await t.http.post(`/v1/credentials/${grant.request_id}/complete`).set(bearer(await t.as.pipeline()));
    for (const mode of ['introspect', 'list'] as const) expect(await refusal(verifier(mode).verify(grant.access_token))).toBe('revoked');
    // Offline alone, a revoked token still verifies: that is what the revocation check is for.
    expect(await verifier().verify(grant.access_token)).toBeTruthy();
  });

  it('keeps refusing a revoked token in list mode past its exp, while the clock tolerance still takes it', async () => {
    const grant = await issue({ ttl_seconds: 60 });
    const listing = verifier('list');
    expect(await listing.verify(grant.access_token)).toBeTruthy();
    await t.http.post(`/v1/credentials/${grant.request_id}/revoke`).set(bearer(await t.as.pipeline())).send({ reason: 'leaked' });
    expect(await refusal(listing.verify(grant.access_token))).toBe('revoked');
    t.clock.advance(65_000); // past exp, so no longer listed by the broker, but inside the 30 s tolerance
    const listed = await t.http.get('/v1/revocations').set(bearer(await t.as.pipeline({}, 'resource-server:registry')));
    expect(listed.body.items).not.toContainEqual(expect.objectContaining({ jti: decodeJwt(grant.access_token).jti }));
    expect(await refusal(listing.verify(grant.access_token))).toBe('revoked');
    t.clock.advance(30_000);
    expect(await refusal(listing.verify(grant.access_token))).toBe('expired');
  });

  it('rejects a broker-looking token that is not one, and fails closed when the broker is unreachable', async () => {
    expect(await refusal(verifier().verify(await t.as.pipeline()))).toBe('invalid');
    const unreachable = createBrokerVerifier({ issuer: BROKER_ISSUER, brokerUrl: 'http://127.0.0.1:9', audience: 'registry.acme.internal' });
    expect(await refusal(unreachable.verify((await issue()).access_token))).toBe('unavailable');
  });

  it('offers a one-call form', async () => {
    const { access_token } = await issue();
    const claims = await verifyBrokerToken(access_token, {
      issuer: BROKER_ISSUER,
      brokerUrl: server.url,
      audience: 'registry.acme.internal',
      requiredScopes: ['logs:read'],
      clockToleranceSeconds: 10 ** 9, // this test's clock is not the process's
    });
    expect(claims.task_id).toBe('build-1');
  });
});
