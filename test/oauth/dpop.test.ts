import { calculateJwkThumbprint, decodeJwt, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { signDpopProof, type DpopSigningKey } from '../../src/dpop/index.js';
import { PROOF_MEMORY_MARGIN_MS } from '../../src/scheduler/jobs.js';
import { BROKER_ISSUER, bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';

/**
 * CONTRACT section 4, a `DPoP` header at `/oauth2/token` (RFC 9449): what a proof must be there,
 * on every kind of exchange, and how long its `jti` is remembered. The proof rules themselves are
 * tested in test/dpop/, the binding of `/v1` tokens in test/credentials/dpop.test.ts.
 */

const GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

let t: TestBroker;
afterEach(async () => {
  await t.close();
});

async function holderKey(): Promise<DpopSigningKey & { jkt: string }> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const publicJwk = await exportJWK(publicKey);
  return { alg: 'ES256', privateKey, publicJwk, jkt: await calculateJwkThumbprint(publicJwk) };
}
let alice: Awaited<ReturnType<typeof holderKey>>;
let mallory: Awaited<ReturnType<typeof holderKey>>;
beforeAll(async () => {
  alice = await holderKey();
  mallory = await holderKey();
});

const proof = (key: DpopSigningKey, options: { now?: number; path?: string } = {}) =>
  signDpopProof(key, { method: 'POST', url: `${BROKER_ISSUER}${options.path ?? '/oauth2/token'}`, now: options.now ?? t.clock() });
const exchange = (fields: Record<string, string>, dpop?: string) => {
  const request = t.http.post('/oauth2/token').type('form');
  return (dpop ? request.set('DPoP', dpop) : request).send({ grant_type: GRANT, ...fields });
};
const ask = async (fields: Record<string, string> = {}) => ({
  subject_token: await t.as.pipeline(),
  subject_token_type: JWT_TYPE,
  scope: 'artifacts:read',
  audience: 'registry.acme.internal',
  task_id: 'build-1',
  ...fields,
});

describe('a DPoP proof at /oauth2/token', () => {
  it('is remembered past the last instant it is accepted: a sweep at that instant keeps its jti, and a replay then is refused', async () => {
    t = await startTestBroker();
    // `iat` is in whole seconds: from one, the proof's last accepted instant is iat + clockSkew exactly.
    const issuedAt = Math.ceil(t.clock() / 1000) * 1000;
    t.clock.set(issuedAt);
    const dpop = await proof(alice, { now: issuedAt });
    expect((await exchange(await ask(), dpop)).status).toBe(200);

    t.clock.set(issuedAt + t.config.clockSkew);
    await t.broker.scheduler.runAll();
    const replay = await exchange(await ask(), dpop);
    expect(replay.status).toBe(400);
    expect(replay.body).toEqual({ error: 'invalid_dpop_proof', error_description: expect.stringMatching(/used before/) });
  });

  it('is remembered for minutes past its window: a replay checked inside it may reach the store after', async () => {
    t = await startTestBroker();
    const issuedAt = t.clock();
    const dpop = await proof(alice, { now: issuedAt });
    expect((await exchange(await ask(), dpop)).status).toBe(200);
    const remembered = async () => (await t.db.sql<{ n: number }>('SELECT count(*) AS n FROM dpop_proofs'))[0]?.n;
    t.clock.set(issuedAt + t.config.clockSkew + 60_000); // a minute past: a replay verified in time may still be waiting on a lock
    await t.broker.scheduler.runAll();
    expect(Number(await remembered())).toBe(1);
    t.clock.set(issuedAt + t.config.clockSkew + PROOF_MEMORY_MARGIN_MS + 1_000);
    await t.broker.scheduler.runAll();
    expect(Number(await remembered())).toBe(0);
  });

  it('takes an iat with a fraction (a NumericDate may have one, RFC 7519), and refuses its replay as any', async () => {
    t = await startTestBroker();
    const fractional = await new SignJWT({ jti: 'fraction-1', htm: 'POST', htu: `${BROKER_ISSUER}/oauth2/token`, iat: Math.floor(t.clock() / 1000) + 0.5001 })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: alice.publicJwk })
      .sign(alice.privateKey);
    const issued = await exchange(await ask(), fractional);
    expect(issued.status, JSON.stringify(issued.body)).toBe(200);
    expect(decodeJwt(issued.body.access_token).cnf).toEqual({ jkt: alice.jkt });
    const replayed = await exchange(await ask(), fractional);
    expect(replayed.status).toBe(400);
    expect(replayed.body.error).toBe('invalid_dpop_proof');
  });

  it('names this endpoint\'s path in its own letter case (RFC 3986: only scheme and host are compared without)', async () => {
    t = await startTestBroker();
    const shouted = await exchange(await ask(), await proof(alice, { path: '/OAUTH2/TOKEN' }));
    expect(shouted.status).toBe(400);
    expect(shouted.body).toEqual({ error: 'invalid_dpop_proof', error_description: `The DPoP proof is for another URL: its htu must be ${BROKER_ISSUER}/oauth2/token.` });
  });

  it('is needed for a requireDpop scope of a child token, even where dpop_jkt names the key to bind it to', async () => {
    t = await startTestBroker({
      configure(config: Record<string, any>) {
        config.scopes.push({ name: 'secrets:read', risk: 'low', maxTtl: '5m' });
        config.policies.push({ id: 'vault', match: { issuer: 'ci', subject: 'repo:acme/app:*' }, scopes: ['secrets:read'] });
      },
    });
    const parent = await exchange(await ask({ scope: 'artifacts:read secrets:read' }));
    expect(parent.body.token_type).toBe('Bearer');
    // The operator makes secrets:read DPoP-only after the parent was issued.
    await t.restart((config: Record<string, any>) => {
      config.scopes.find((scope: { name: string }) => scope.name === 'secrets:read').requireDpop = true;
    });
    const subAgent = await holderKey();
    const child = (fields: Record<string, string>, dpop?: string) =>
      exchange({ subject_token: parent.body.access_token, subject_token_type: ACCESS_TOKEN_TYPE, dpop_jkt: subAgent.jkt, ...fields }, dpop);

    const unproven = await child({});
    expect(unproven.status).toBe(400);
    expect(unproven.body).toEqual({ error: 'invalid_dpop_proof', error_description: expect.stringMatching(/secrets:read/) });
    // With a proof (by any key: the parent is not bound), the child is bound to dpop_jkt's key.
    const proven = await child({}, await proof(alice));
    expect(proven.status).toBe(200);
    expect(decodeJwt(proven.body.access_token).cnf).toEqual({ jkt: subAgent.jkt });
    // A child without the scope needs no proof: dpop_jkt alone still chooses its key.
    const narrower = await child({ scope: 'artifacts:read' });
    expect(narrower.status).toBe(200);
    expect(decodeJwt(narrower.body.access_token).cnf).toEqual({ jkt: subAgent.jkt });
  });
});

describe('polling a request that awaits approval at /oauth2/token (request_id)', () => {
  // model:deploy needs an approval: the exchange opens a request and answers authorization_pending.
  const deploy = async (dpop?: string) => {
    const opened = await exchange(await ask({ subject_token: await t.as.ml(), scope: 'model:deploy' }), dpop);
    expect(opened.body.error).toBe('authorization_pending');
    return opened.body.request_id as string;
  };
  const poll = async (requestId: string, dpop?: string) =>
    exchange({ subject_token: await t.as.ml(), subject_token_type: JWT_TYPE, request_id: requestId }, dpop);
  const expectRefusedProof = (response: { status: number; body: Record<string, unknown> }, detail: RegExp) => {
    expect(response.status).toBe(400);
    expect(response.body).toEqual({ error: 'invalid_dpop_proof', error_description: expect.stringMatching(detail) });
  };

  it('refuses a bad proof with invalid_dpop_proof, as any exchange does, whether or not the request was made with one', async () => {
    t = await startTestBroker();
    for (const requestId of [await deploy(), await deploy(await proof(alice))]) {
      expectRefusedProof(await poll(requestId, 'garbage.not.a-proof'), /not a compact JWS|not a well-formed/);
      expectRefusedProof(await poll(requestId, await proof(alice, { path: '/v1/credentials' })), /another URL/);
    }
  });

  it('answers a request made with a proof only to a fresh proof by its key, which then collects it', async () => {
    t = await startTestBroker();
    const requestId = await deploy(await proof(alice));
    expectRefusedProof(await poll(requestId), /made with a proof/);
    expectRefusedProof(await poll(requestId, await proof(mallory)), /another key/);
    const fresh = await proof(alice);
    expect((await poll(requestId, fresh)).body).toEqual({ error: 'authorization_pending', error_description: expect.any(String), request_id: requestId });
    expectRefusedProof(await poll(requestId, fresh), /used before/);

    const { digest } = (await t.http.get(`/v1/credentials/${requestId}`).set(bearer(await t.as.ml()))).body;
    const approval = await t.http
      .post(`/v1/credentials/${requestId}/approvals`)
      .set(bearer(await t.as.person('carol', ['approvers', 'ml-release'])))
      .send({ decision: 'approve', reason: 'release 7', digest });
    expect(approval.body.status).toBe('approved');
    expectRefusedProof(await poll(requestId, await proof(mallory)), /another key/);
    const collected = await poll(requestId, await proof(alice));
    expect(collected.status).toBe(200);
    expect(collected.body.token_type).toBe('DPoP');
    expect(decodeJwt(collected.body.access_token).cnf).toEqual({ jkt: alice.jkt });
  });

  it('answers a request made without a proof with or without one', async () => {
    t = await startTestBroker();
    const requestId = await deploy();
    expect((await poll(requestId)).body.error).toBe('authorization_pending');
    expect((await poll(requestId, await proof(alice))).body.error).toBe('authorization_pending');
  });
});
