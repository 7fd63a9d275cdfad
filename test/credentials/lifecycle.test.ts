import { generateKeyPair, SignJWT } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BROKER_ISSUER, bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { eventsOf } from '../helpers/records.js';

const body = { task_id: 'build-42', scopes: ['artifacts:read'], audience: 'registry.acme.internal' };

let t: TestBroker;
beforeEach(async () => {
  t = await startTestBroker();
});
afterEach(async () => {
  await t.close();
});

const issue = async (token?: string, payload: Record<string, unknown> = body) =>
  (await t.http.post('/v1/credentials').set(bearer(token ?? (await t.as.pipeline()))).send(payload)).body as {
    request_id: string;
    access_token: string;
    status: string;
  };
const resourceServer = () => t.as.pipeline({}, 'resource-server:registry');
const introspect = async (token: string, caller?: string) =>
  t.http.post('/oauth2/introspect').set(bearer(caller ?? (await resourceServer()))).type('form').send({ token });
const revocations = async () => (await t.http.get('/v1/revocations').set(bearer(await resourceServer()))).body;

describe('ending a grant', () => {
  it('completes: the grant is revoked with reason task_completed, its token inactive and listed as revoked', async () => {
    const grant = await issue();
    expect((await introspect(grant.access_token)).body.active).toBe(true);
    // It takes no body: a field sent to it (say a misplaced reason) is refused, not ignored.
    const withBody = await t.http.post(`/v1/credentials/${grant.request_id}/complete`).set(bearer(await t.as.pipeline())).send({ reason: 'done' });
    expect(withBody.status).toBe(400);
    expect(withBody.body.errors).toEqual([{ pointer: '#/reason', detail: 'unknown field' }]);
    expect((await introspect(grant.access_token)).body.active).toBe(true);
    const done = await t.http.post(`/v1/credentials/${grant.request_id}/complete`).set(bearer(await t.as.pipeline()));
    expect(done.status).toBe(200);
    expect(done.body).toMatchObject({ status: 'revoked', revoke_reason: 'task_completed', revoked_by: { iss: 'https://ci.test', sub: 'repo:acme/app:ref:refs/heads/main' } });
    expect((await introspect(grant.access_token)).body).toEqual({ active: false });
    const jti = done.body.jti as string;
    expect((await revocations()).items).toEqual([{ jti, exp: expect.any(Number) }]);
    expect((await eventsOf(t, grant.request_id)).at(-1)).toMatchObject({
      type: 'token.revoked',
      actor: { sub: 'repo:acme/app:ref:refs/heads/main' },
      data: { reason: 'task_completed', jti, previous_status: 'issued' },
    });
  });

  it('revokes for the requester or an admin, with who and why recorded; others are refused', async () => {
    const grant = await issue();
    expect((await t.http.post(`/v1/credentials/${grant.request_id}/revoke`).set(bearer(await t.as.pipeline({}, 'repo:acme/other'))).send({ reason: 'x' })).status).toBe(404);
    const auditor = await t.http.post(`/v1/credentials/${grant.request_id}/revoke`).set(bearer(await t.as.person('ivy', ['auditors']))).send({ reason: 'x' });
    expect(auditor.status).toBe(403);
    expect(auditor.body.type).toMatch(/policy_denied$/);
    expect((await t.http.post(`/v1/credentials/${grant.request_id}/revoke`).set(bearer(await t.as.pipeline())).send({})).status).toBe(400);

    const admin = await t.as.person('root', ['admins']);
    const revoked = await t.http.post(`/v1/credentials/${grant.request_id}/revoke`).set(bearer(admin)).send({ reason: 'suspected leak' });
    expect(revoked.body).toMatchObject({ status: 'revoked', revoke_reason: 'suspected leak', revoked_by: { sub: 'root' } });
    expect((await eventsOf(t, grant.request_id)).at(-1)).toMatchObject({ type: 'token.revoked', actor: { sub: 'root' }, data: { reason: 'suspected leak' } });
    const again = await t.http.post(`/v1/credentials/${grant.request_id}/revoke`).set(bearer(admin)).send({ reason: 'again' });
    expect(again.status).toBe(409);
  });

  it('withdraws a pending request (request.revoked, no token involved)', async () => {
    const pending = await issue(await t.as.ml(), { ...body, scopes: ['model:deploy'] });
    const withdrawn = await t.http.post(`/v1/credentials/${pending.request_id}/revoke`).set(bearer(await t.as.ml())).send({ reason: 'not needed' });
    expect(withdrawn.body.status).toBe('revoked');
    expect((await eventsOf(t, pending.request_id)).at(-1)?.type).toBe('request.revoked');
  });

  it('refuses to end an expired grant (409)', async () => {
    const grant = await issue(undefined, { ...body, ttl_seconds: 10 });
    t.clock.advance(11_000);
    expect((await t.http.post(`/v1/credentials/${grant.request_id}/complete`).set(bearer(await t.as.pipeline()))).status).toBe(409);
  });
});

describe('POST /oauth2/revoke (RFC 7009)', () => {
  it('lets the holder revoke its own token, and answers 200 for tokens it does not know', async () => {
    const grant = await issue();
    const holder = await t.as.pipeline();
    const response = await t.http.post('/oauth2/revoke').set(bearer(holder)).type('form').send({ token: grant.access_token });
    expect(response.status).toBe(200);
    expect((await introspect(grant.access_token)).body.active).toBe(false);
    expect((await eventsOf(t, grant.request_id)).at(-1)).toMatchObject({ type: 'token.revoked', data: { reason: 'revoked_by_holder' } });
    expect((await t.http.post('/oauth2/revoke').set(bearer(holder)).type('form').send({ token: 'nonsense' })).status).toBe(200);
  });

  it('refuses to revoke someone else\'s token, and needs an identity', async () => {
    const grant = await issue();
    const other = await t.http.post('/oauth2/revoke').set(bearer(await t.as.pipeline({}, 'repo:acme/other'))).type('form').send({ token: grant.access_token });
    expect(other.status).toBe(400);
    expect(other.body.error).toBe('unauthorized_client');
    expect((await introspect(grant.access_token)).body.active).toBe(true);
    const anonymous = await t.http.post('/oauth2/revoke').type('form').send({ token: grant.access_token });
    expect(anonymous.status).toBe(401);
    expect(anonymous.body.error).toBe('invalid_token');
  });
});

describe('POST /oauth2/introspect (RFC 7662)', () => {
  it('answers active with the token\'s claims for a live token', async () => {
    const grant = await issue();
    const response = await introspect(grant.access_token);
    expect(response.status).toBe(200);
    expect(response.headers['cache-control']).toBe('no-store');
    expect(response.body).toMatchObject({
      active: true,
      token_type: 'Bearer',
      iss: BROKER_ISSUER,
      sub: 'repo:acme/app:ref:refs/heads/main',
      aud: 'registry.acme.internal',
      scope: 'artifacts:read',
      client_id: 'ci',
      request_id: grant.request_id,
      jti: expect.any(String),
      exp: expect.any(Number),
    });
  });

  it('answers inactive for expired, unknown, foreign and forged tokens', async () => {
    const grant = await issue(undefined, { ...body, ttl_seconds: 5 });
    const forger = await generateKeyPair('ES256');
    const [header] = grant.access_token.split('.');
    const { kid } = JSON.parse(Buffer.from(header as string, 'base64url').toString()) as { kid: string };
    const forged = await new SignJWT({ scope: 'artifacts:read', jti: 'x' })
      .setProtectedHeader({ alg: 'ES256', kid, typ: 'at+jwt' })
      .setIssuer(BROKER_ISSUER)
      .setSubject('repo:acme/app:ref:refs/heads/main')
      .setAudience('registry.acme.internal')
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(forger.privateKey);
    for (const token of [forged, 'not-a-token', await t.as.pipeline()]) {
      expect((await introspect(token)).body).toEqual({ active: false });
    }
    t.clock.advance(6_000);
    expect((await introspect(grant.access_token)).body).toEqual({ active: false });
  });

  it('is for the introspector role only (403), and for identified callers (401)', async () => {
    const grant = await issue();
    const denied = await introspect(grant.access_token, await t.as.pipeline());
    expect(denied.status).toBe(403);
    expect(denied.body.error).toBe('insufficient_scope'); // RFC 6750: /oauth2 answers registered codes only
    expect(denied.headers['www-authenticate']).toBe('Bearer error="insufficient_scope"');
    const anonymous = await t.http.post('/oauth2/introspect').type('form').send({ token: grant.access_token });
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers['www-authenticate']).toBe('Bearer');
    expect((await t.http.post('/oauth2/introspect').set(bearer(await resourceServer())).type('form').send({})).status).toBe(400);
  });
});

describe('GET /v1/revocations', () => {
  it('lists revoked tokens until they expire, for introspectors only', async () => {
    const short = await issue(undefined, { ...body, ttl_seconds: 30 });
    const long = await issue(undefined, { ...body, ttl_seconds: 600 });
    for (const grant of [short, long]) {
      await t.http.post(`/v1/credentials/${grant.request_id}/complete`).set(bearer(await t.as.pipeline()));
    }
    expect((await revocations()).items).toHaveLength(2);
    t.clock.advance(31_000);
    const { items, next_cursor } = await revocations();
    expect(items).toEqual([{ jti: expect.any(String), exp: Math.floor(t.clock() / 1000) - 31 + 600 }]);
    expect(next_cursor).toBeNull();
    const denied = await t.http.get('/v1/revocations').set(bearer(await t.as.pipeline()));
    expect(denied.status).toBe(403);
    expect(denied.body.type).toMatch(/policy_denied$/);
  });
});
