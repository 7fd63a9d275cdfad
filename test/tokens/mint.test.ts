import { createLocalJWKSet, decodeJwt, jwtVerify } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { BROKER_ISSUER, bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';

let t: TestBroker | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

const issue = async (t: TestBroker) =>
  (
    await t.http
      .post('/v1/credentials')
      .set(bearer(await t.as.pipeline()))
      .send({ task_id: 'build-1', scopes: ['artifacts:read'], audience: 'registry.acme.internal', ttl_seconds: 300 })
  ).body.access_token as string;

describe('minted tokens', () => {
  it.each([
    ['30s', 30],
    ['5s', 5],
  ])('carry nbf backdated by clockSkew (%s)', async (clockSkew, seconds) => {
    t = await startTestBroker({ configure: (c) => (c.clockSkew = clockSkew) });
    const claims = decodeJwt(await issue(t));
    expect(claims.iat).toBe(Math.floor(t.clock() / 1000));
    expect(claims.nbf).toBe((claims.iat as number) - seconds);
    expect(claims.exp).toBe((claims.iat as number) + 300);
  });

  it('each carry a jti of its own, however many are minted in one millisecond', async () => {
    const { mintAccessToken } = await import('../../src/tokens/mint.js');
    t = await startTestBroker();
    const grant = { sub: 's', aud: 'a', idp: 'ci', scopes: ['artifacts:read'], taskId: 't', requestId: 'r', approvers: [], breakGlass: false, ttlSeconds: 60 };
    const now = t.clock();
    const jtis = new Set<string>();
    for (let i = 0; i < 2_000; i += 1) jtis.add((await mintAccessToken(t.broker.keyring, BROKER_ISSUER, grant, now, { clockSkewMs: 0 })).jti);
    expect(jtis.size).toBe(2_000);
  });

  it('verify at once where the resource server\'s clock lags the broker\'s by a few seconds, with no leeway', async () => {
    t = await startTestBroker();
    const token = await issue(t);
    const keys = createLocalJWKSet((await t.http.get('/.well-known/jwks.json')).body);
    const lagging = new Date(t.clock() - 2_000);
    const { payload } = await jwtVerify(token, keys, { issuer: BROKER_ISSUER, audience: 'registry.acme.internal', currentDate: lagging, clockTolerance: 0 });
    expect(payload.sub).toBe('repo:acme/app:ref:refs/heads/main');
  });
});
