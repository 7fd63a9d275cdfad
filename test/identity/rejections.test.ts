import { createHmac } from 'node:crypto';
import { exportJWK, exportSPKI, generateKeyPair, importJWK, SignJWT, type CryptoKey } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { createTestIssuer } from '../helpers/issuer.js';

/** CONTRACT section 1: every way an identity token is refused, each against the real app. */

const body = { task_id: 'build-1', scopes: ['artifacts:read'], audience: 'registry.acme.internal' };
const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

let t: TestBroker;
beforeAll(async () => {
  t = await startTestBroker();
});
afterAll(async () => {
  await t.close();
});

/** The reason the broker logged for its most recent refusal. */
function lastRejection(): string | undefined {
  for (let i = t.logs.length - 1; i >= 0; i -= 1) {
    const line = JSON.parse(t.logs[i] as string) as { rejection?: string };
    if (line.rejection) return line.rejection;
  }
  return undefined;
}

async function expectRefused(token: string, reason: string) {
  const response = await t.http.post('/v1/credentials').set(bearer(token)).send(body);
  expect(response.status).toBe(401);
  expect(response.headers['www-authenticate']).toBe('Bearer error="invalid_token"');
  expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(response.body).toMatchObject({ type: expect.stringMatching(/invalid_token$/), status: 401 });
  // The caller learns nothing about which check failed; the log does.
  expect(response.body.detail).toBe('The identity token was not accepted.');
  expect(lastRejection()).toBe(reason);
}

const now = () => Math.floor(t.clock() / 1000);
const claims = { repository: 'acme/app', actor: 'octocat' };
const pipelineSub = 'repo:acme/app:ref:refs/heads/main';

describe('identity tokens', () => {
  it('accepts a good token (the control every refusal below is measured against)', async () => {
    const response = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send(body);
    expect(response.status).toBe(201);
  });

  it('answers a request without a bearer token with 401 and a bare Bearer challenge', async () => {
    const response = await t.http.post('/v1/credentials').send(body);
    expect(response.status).toBe(401);
    expect(response.headers['www-authenticate']).toBe('Bearer');
    const basic = await t.http.post('/v1/credentials').set('Authorization', 'Basic YWxpY2U6c2VjcmV0').send(body);
    expect(basic.status).toBe(401);
    expect(basic.headers['www-authenticate']).toBe('Bearer');
  });

  it('refuses alg none', async () => {
    const token = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ iss: t.issuers.ci.iss, sub: pipelineSub, aud: 'jit-broker', iat: now(), exp: now() + 300, ...claims })}.`;
    await expectRefused(token, 'algorithm');
  });

  it('refuses an HMAC token keyed with the issuer\'s public key', async () => {
    const pem = await exportSPKI((await importJWK(t.issuers.ci.publicJwk, 'ES256', { extractable: true })) as CryptoKey);
    const header = b64({ alg: 'HS256', typ: 'JWT', kid: t.issuers.ci.kid });
    const payload = b64({ iss: t.issuers.ci.iss, sub: pipelineSub, aud: 'jit-broker', iat: now(), exp: now() + 300, ...claims });
    const signature = createHmac('sha256', pem).update(`${header}.${payload}`).digest('base64url');
    await expectRefused(`${header}.${payload}.${signature}`, 'algorithm');
  });

  it('refuses an algorithm the issuer is not configured for', async () => {
    const rsa = await createTestIssuer(t.issuers.ci.iss, 'RS256');
    await expectRefused(await rsa.token(pipelineSub, claims, { now: t.clock() }), 'algorithm');
  });

  it('refuses a bad signature', async () => {
    const forger = await generateKeyPair('ES256');
    const token = await t.issuers.ci.token(pipelineSub, claims, { now: t.clock(), key: forger.privateKey });
    await expectRefused(token, 'signature');
  });

  it('refuses a token whose payload was altered after signing', async () => {
    const [header, , signature] = (await t.as.pipeline()).split('.');
    const payload = b64({ iss: t.issuers.ci.iss, sub: 'repo:acme/ml:ref:refs/heads/main', aud: 'jit-broker', iat: now(), exp: now() + 300, ...claims });
    await expectRefused(`${header}.${payload}.${signature}`, 'signature');
  });

  it('refuses an unknown issuer', async () => {
    const stranger = await createTestIssuer('https://evil.test');
    await expectRefused(await stranger.token(pipelineSub, claims, { now: t.clock() }), 'unknown_issuer');
  });

  it('refuses a token for another audience', async () => {
    await expectRefused(await t.issuers.ci.token(pipelineSub, { ...claims, aud: 'someone-else' }, { now: t.clock() }), 'audience');
  });

  it('refuses a token from the second of its exp: the clock skew forgives nbf and iat ahead, not exp behind', async () => {
    for (const exp of [now() - 31, now() - 1, now()]) {
      await expectRefused(await t.issuers.ci.token(pipelineSub, { ...claims, iat: now() - 600, exp }, { now: t.clock() }), 'expired');
    }
    // The same for a person's token.
    await expectRefused(await t.issuers.sso.token('alice', { iat: now() - 600, exp: now() - 1 }, { now: t.clock() }), 'expired');
    const last = await t.issuers.ci.token(pipelineSub, { ...claims, iat: now() - 600, exp: now() + 1 }, { now: t.clock() });
    expect((await t.http.post('/v1/credentials').set(bearer(last)).send(body)).status).toBe(201);
  });

  it('refuses a token not yet valid (nbf in the future beyond skew)', async () => {
    await expectRefused(await t.issuers.ci.token(pipelineSub, { ...claims, nbf: now() + 120 }, { now: t.clock() }), 'not_yet_valid');
  });

  it('refuses a token issued in the future beyond skew', async () => {
    await expectRefused(await t.issuers.ci.token(pipelineSub, { ...claims, iat: now() + 120, exp: now() + 600 }, { now: t.clock() }), 'issued_in_future');
    // The SSO issuer has no maxTokenAge, where jose alone would not look at iat.
    await expectRefused(await t.issuers.sso.token('alice', { iat: now() + 120, exp: now() + 600 }, { now: t.clock() }), 'issued_in_future');
  });

  it('refuses a token older than the issuer\'s maxTokenAge, by iat, with no skew added', async () => {
    await expectRefused(await t.issuers.ci.token(pipelineSub, { ...claims, iat: now() - 2 * 3600, exp: now() + 300 }, { now: t.clock() }), 'too_old');
    // 10 s past the 1 h limit is past it, although within the 30 s clockSkew.
    await expectRefused(await t.issuers.ci.token(pipelineSub, { ...claims, iat: now() - 3600 - 10, exp: now() + 300 }, { now: t.clock() }), 'too_old');
    const atTheLimit = await t.issuers.ci.token(pipelineSub, { ...claims, iat: now() - 3600, exp: now() + 300 }, { now: t.clock() });
    expect((await t.http.post('/v1/credentials').set(bearer(atTheLimit)).send(body)).status).toBe(201);
    // With a maxTokenAge, a token without iat has no age to judge: refused.
    await expectRefused(await t.issuers.ci.token(pipelineSub, { ...claims, iat: undefined, exp: now() + 300 }, { now: t.clock() }), 'missing_claim');
  });

  it('refuses a token missing a required claim, or carrying it empty', async () => {
    await expectRefused(await t.issuers.ci.token(pipelineSub, {}, { now: t.clock() }), 'missing_claim');
    for (const repository of [null, '']) {
      await expectRefused(await t.issuers.ci.token(pipelineSub, { repository }, { now: t.clock() }), 'missing_claim');
    }
  });

  it('refuses a token without sub, or with an empty one (every such token of an issuer would be one identity)', async () => {
    await expectRefused(await t.issuers.ci.token(undefined, claims, { now: t.clock() }), 'missing_claim');
    await expectRefused(await t.issuers.ci.token('', claims, { now: t.clock() }), 'missing_claim');
  });

  it('refuses a token without exp', async () => {
    const token = await new SignJWT({ iss: t.issuers.ci.iss, sub: pipelineSub, aud: 'jit-broker', iat: now(), ...claims })
      .setProtectedHeader({ alg: 'ES256', kid: t.issuers.ci.kid })
      .sign(t.issuers.ci.privateKey);
    await expectRefused(token, 'missing_claim');
  });

  it('refuses the broker\'s own access token used as an identity', async () => {
    const issued = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send(body);
    expect(issued.status).toBe(201);
    await expectRefused(issued.body.access_token as string, 'access_token_as_identity');
    // Even dressed as an issuer's token, typ at+jwt is never an identity.
    await expectRefused(await t.issuers.ci.token(pipelineSub, claims, { now: t.clock(), header: { typ: 'application/at+jwt' } }), 'access_token_as_identity');
  });

  it('refuses a token its issuer bound to a key (cnf): a copy sent as Bearer proves no key', async () => {
    // A DPoP-bound (RFC 9449) and an mTLS-bound (RFC 8705) token of the issuer, each sent by whoever copied it.
    for (const cnf of [{ jkt: 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs' }, { 'x5t#S256': 'bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2' }, null]) {
      await expectRefused(await t.issuers.ci.token(pipelineSub, { ...claims, cnf }, { now: t.clock() }), 'invalid_claim');
    }
    // Nor is it taken as a subject_token at the token endpoint.
    const bound = await t.issuers.ci.token(pipelineSub, { ...claims, cnf: { jkt: 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs' } }, { now: t.clock() });
    const exchanged = await t.http.post('/oauth2/token').type('form').send({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: bound,
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      scope: 'artifacts:read',
      audience: 'registry.acme.internal',
      task_id: 'build-1',
    });
    expect(exchanged.status).toBe(400);
    expect(exchanged.body.error).toBe('invalid_request');
    expect(lastRejection()).toBe('invalid_claim');
  });

  it('refuses a token larger than 8 KiB, and accepts one just under', async () => {
    const sized = async (bytes: number) => {
      let padding = 'x'.repeat(bytes);
      let token = await t.issuers.ci.token(pipelineSub, { ...claims, padding }, { now: t.clock() });
      padding = padding.slice(0, padding.length - Math.ceil(((token.length - bytes) * 3) / 4));
      token = await t.issuers.ci.token(pipelineSub, { ...claims, padding }, { now: t.clock() });
      return token;
    };
    const under = await sized(8000);
    expect(under.length).toBeLessThanOrEqual(8192);
    expect((await t.http.post('/v1/credentials').set(bearer(under)).send(body)).status).toBe(201);
    const over = await t.issuers.ci.token(pipelineSub, { ...claims, padding: 'x'.repeat(6200) }, { now: t.clock() });
    expect(over.length).toBeGreaterThan(8192);
    await expectRefused(over, 'too_large');
  });

  it('refuses a token whose kid the issuer does not have', async () => {
    const other = await generateKeyPair('ES256');
    const token = await t.issuers.ci.token(pipelineSub, claims, { now: t.clock(), key: other.privateKey, header: { kid: 'not-a-key-of-ci' } });
    await expectRefused(token, 'unknown_key');
  });

  it('refuses a token that brings its own key in a jwk header', async () => {
    const attacker = await generateKeyPair('ES256', { extractable: true });
    const jwk = await exportJWK(attacker.publicKey);
    const token = await t.issuers.ci.token(pipelineSub, claims, { now: t.clock(), key: attacker.privateKey, header: { jwk } });
    await expectRefused(token, 'embedded_key');
    const jku = await t.issuers.ci.token(pipelineSub, claims, { now: t.clock(), header: { jku: 'https://evil.test/jwks' } });
    await expectRefused(jku, 'embedded_key');
  });

  it('refuses something that is not a JWT', async () => {
    await expectRefused('not-a-jwt', 'malformed');
  });
});
