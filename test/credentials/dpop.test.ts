import { calculateJwkThumbprint, decodeJwt, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { signDpopProof, type DpopSigningKey } from '../../src/dpop/index.js';
import { BROKER_ISSUER, bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { eventsOf } from '../helpers/records.js';

/**
 * CONTRACT sections 2 to 4, DPoP (RFC 9449) on the broker's own endpoints: a proof binds the token
 * it returns to the proof's key (`cnf.jkt`, `token_type: DPoP`); a bad proof is refused, never a
 * 500; a proof is used once; a request that waited with a proof is collected only with a proof by
 * the same key; a child of a bound token needs a proof by its key. The proof rules themselves are
 * tested in test/dpop/.
 */

let t: TestBroker;
afterEach(async () => {
  await t.close();
});

/** A holder's key pair, as a CLI or an agent keeps it. */
async function holderKey(alg: DpopSigningKey['alg'] = 'ES256'): Promise<DpopSigningKey & { jkt: string }> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk = await exportJWK(publicKey);
  return { alg, privateKey, publicJwk, jkt: await calculateJwkThumbprint(publicJwk) };
}
let alice: Awaited<ReturnType<typeof holderKey>>;
let mallory: Awaited<ReturnType<typeof holderKey>>;
beforeAll(async () => {
  alice = await holderKey();
  mallory = await holderKey('EdDSA');
});

const start = () =>
  startTestBroker({
    configure(config: Record<string, any>) {
      config.scopes.push({ name: 'secrets:read', risk: 'low', maxTtl: '5m', requireDpop: true }, { name: 'vault:admin', risk: 'high', maxTtl: '5m', requireDpop: true });
      config.policies.push({ id: 'vault', match: { issuer: 'ci', subject: 'repo:acme/app:*' }, scopes: ['secrets:read', 'vault:admin'] });
    },
  });
const proof = (key: DpopSigningKey, path: string, options: { now?: number; method?: string; url?: string } = {}) =>
  signDpopProof(key, { method: options.method ?? 'POST', url: options.url ?? `${BROKER_ISSUER}${path}`, now: options.now ?? t.clock() });
const read = { task_id: 'build', scopes: ['artifacts:read'], audience: 'registry.acme.internal' };
const post = async (body: object, dpop?: string) => {
  const request = t.http.post('/v1/credentials').set(bearer(await t.as.pipeline()));
  return (dpop ? request.set('DPoP', dpop) : request).send(body);
};
const expectRefusedProof = (response: { status: number; body: { type?: string; detail?: string } }) => {
  expect(response.status).toBe(400);
  expect(response.body.type).toMatch(/invalid_request$/);
  expect(response.body.detail).toMatch(/DPoP/);
};
const exchange = (fields: Record<string, string>, dpop?: string) => {
  const request = t.http.post('/oauth2/token').type('form');
  return (dpop ? request.set('DPoP', dpop) : request).send({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', ...fields });
};
const introspect = async (token: string) =>
  (await t.http.post('/oauth2/introspect').set(bearer(await t.as.pipeline({}, 'resource-server:vault'))).type('form').send({ token })).body;

describe('POST /v1/credentials with a DPoP proof', () => {
  it('binds the token to the proof\'s key: token_type DPoP, cnf.jkt, in the record and the event', async () => {
    t = await start();
    const response = await post(read, await proof(alice, '/v1/credentials'));
    expect(response.status).toBe(201);
    expect(response.body.token_type).toBe('DPoP');
    expect(decodeJwt(response.body.access_token).cnf).toEqual({ jkt: alice.jkt });
    expect((await eventsOf(t, response.body.request_id)).find((e) => e.type === 'token.issued')?.data.cnf).toEqual({ jkt: alice.jkt });
    expect(await introspect(response.body.access_token)).toMatchObject({ active: true, token_type: 'DPoP', cnf: { jkt: alice.jkt } });
    // Without a proof, a plain bearer token, as before.
    const bearerToken = await post(read);
    expect(bearerToken.body.token_type).toBe('Bearer');
    expect(decodeJwt(bearerToken.body.access_token).cnf).toBeUndefined();
  });

  it('refuses a bad proof with 400 naming DPoP, never a 500, and records no grant', async () => {
    t = await start();
    const secret = new TextEncoder().encode('a shared secret, which a proof must never be');
    const withPrivateJwk = await new SignJWT({ jti: 'x', htm: 'POST', htu: `${BROKER_ISSUER}/v1/credentials`, iat: Math.floor(t.clock() / 1000) })
      .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: (await exportJWK(alice.privateKey as CryptoKey)) as JWK })
      .sign(alice.privateKey as CryptoKey);
    const foreignSigned = await new SignJWT({ jti: 'y', htm: 'POST', htu: `${BROKER_ISSUER}/v1/credentials`, iat: Math.floor(t.clock() / 1000) })
      .setProtectedHeader({ typ: 'dpop+jwt', alg: 'EdDSA', jwk: alice.publicJwk })
      .sign(mallory.privateKey as CryptoKey);
    const hmac = await new SignJWT({ jti: 'z', htm: 'POST', htu: `${BROKER_ISSUER}/v1/credentials`, iat: Math.floor(t.clock() / 1000) })
      .setProtectedHeader({ typ: 'dpop+jwt', alg: 'HS256' })
      .sign(secret);
    const bad = [
      'not a proof',
      await proof(alice, '/v1/credentials', { now: t.clock() - 120_000 }), // stale
      await proof(alice, '/v1/credentials', { now: t.clock() + 120_000 }), // from the future
      await proof(alice, '/v1/credentials', { method: 'GET' }),
      await proof(alice, '/v1/credentials', { url: 'https://evil.test/v1/credentials' }),
      await proof(alice, '/oauth2/token'), // another endpoint
      withPrivateJwk,
      foreignSigned,
      hmac,
    ];
    for (const dpop of bad) expectRefusedProof(await post(read, dpop));
    const two = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).set('DPoP', [await proof(alice, '/v1/credentials'), await proof(alice, '/v1/credentials')] as unknown as string).send(read); // superagent sends an array as two headers; its typings say string
    expectRefusedProof(two);
    expect(await t.db.sql('SELECT id FROM requests')).toEqual([]);
  });

  it('uses a proof once: the same proof again is refused', async () => {
    t = await start();
    const once = await proof(alice, '/v1/credentials');
    expect((await post(read, once)).status).toBe(201);
    const again = await post(read, once);
    expectRefusedProof(again);
    expect(again.body.detail).toMatch(/used before/);
  });

  it('refuses a requireDpop scope without a proof, and binds it with one', async () => {
    t = await start();
    const refused = await post({ ...read, scopes: ['secrets:read'] });
    expectRefusedProof(refused);
    expect(refused.body.detail).toMatch(/secrets:read is only issued DPoP-bound/);
    const bound = await post({ ...read, scopes: ['secrets:read'] }, await proof(alice, '/v1/credentials'));
    expect(bound.status).toBe(201);
    expect(decodeJwt(bound.body.access_token).cnf).toEqual({ jkt: alice.jkt });
  });
});

describe('a request that waits, made with a proof', () => {
  it('is collected only with a proof by the same key (a requireDpop scope needs one on both calls)', async () => {
    t = await start();
    const pending = await post({ ...read, scopes: ['vault:admin'] }, await proof(alice, '/v1/credentials'));
    expect(pending.status).toBe(202);
    const view = (await t.http.get(`/v1/credentials/${pending.body.request_id}`).set(bearer(await t.as.pipeline()))).body;
    await t.http.post(`/v1/credentials/${view.request_id}/approvals`).set(bearer(await t.as.person('carol', ['approvers']))).send({ decision: 'approve', reason: 'ok', digest: view.digest });
    const path = `/v1/credentials/${view.request_id}/token`;
    const collect = async (dpop?: string) => {
      const request = t.http.post(path).set(bearer(await t.as.pipeline()));
      return dpop ? request.set('DPoP', dpop) : request;
    };
    expectRefusedProof(await collect());
    expectRefusedProof(await collect(await proof(mallory, path)));
    const collected = await collect(await proof(alice, path));
    expect(collected.status).toBe(201);
    expect(collected.body.token_type).toBe('DPoP');
    expect(decodeJwt(collected.body.access_token).cnf).toEqual({ jkt: alice.jkt });
  });
});

describe('the token endpoint', () => {
  const jwt = 'urn:ietf:params:oauth:token-type:jwt';

  it('binds the exchanged token, and answers invalid_dpop_proof for a bad proof', async () => {
    t = await start();
    const fields = async () => ({ subject_token: await t.as.pipeline(), subject_token_type: jwt, scope: 'artifacts:read', audience: 'registry.acme.internal', task_id: 'x' });
    const bound = await exchange(await fields(), await proof(alice, '/oauth2/token'));
    expect(bound.status).toBe(200);
    expect(bound.body.token_type).toBe('DPoP');
    expect(decodeJwt(bound.body.access_token).cnf).toEqual({ jkt: alice.jkt });
    const refused = await exchange(await fields(), await proof(alice, '/v1/credentials'));
    expect(refused.status).toBe(400);
    expect(refused.body.error).toBe('invalid_dpop_proof');
    const requires = await exchange({ ...(await fields()), scope: 'secrets:read' });
    expect(refused.status).toBe(400);
    expect(requires.body.error).toBe('invalid_dpop_proof');
  });

  it('exchanges a bound parent only with a proof by its key, binding the child to it or to dpop_jkt', async () => {
    t = await start();
    const parent = await post({ ...read, scopes: ['artifacts:read', 'secrets:read'] }, await proof(alice, '/v1/credentials'));
    const access = 'urn:ietf:params:oauth:token-type:access_token';
    const child = (dpop?: string, extra: Record<string, string> = {}) => exchange({ subject_token: parent.body.access_token, subject_token_type: access, ...extra }, dpop);
    // A thief with the token alone, or with a key of its own, gets nothing.
    expect((await child()).body.error).toBe('invalid_dpop_proof');
    expect((await child(await proof(mallory, '/oauth2/token'))).body.error).toBe('invalid_dpop_proof');
    const same = await child(await proof(alice, '/oauth2/token'), { scope: 'secrets:read' });
    expect(same.status).toBe(200);
    expect(decodeJwt(same.body.access_token).cnf).toEqual({ jkt: alice.jkt });
    // Handed to a sub-agent: bound to the sub-agent's key, which alice never holds.
    const handed = await child(await proof(alice, '/oauth2/token'), { dpop_jkt: mallory.jkt });
    expect(decodeJwt(handed.body.access_token).cnf).toEqual({ jkt: mallory.jkt });
    expect((await child(await proof(alice, '/oauth2/token'), { dpop_jkt: 'short' })).body.error).toBe('invalid_request');
  });
});
