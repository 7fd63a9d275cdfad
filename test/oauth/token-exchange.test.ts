import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';

const GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';

let t: TestBroker;
beforeAll(async () => {
  t = await startTestBroker();
});
afterAll(async () => {
  await t.close();
});

const exchange = (form: Record<string, string | string[]>) => t.http.post('/oauth2/token').type('form').send(form);
const base = async (extra: Record<string, string> = {}) => ({
  grant_type: GRANT,
  subject_token: await t.as.pipeline(),
  subject_token_type: JWT_TYPE,
  scope: 'artifacts:read logs:read',
  audience: 'registry.acme.internal',
  task_id: 'build-7',
  ...extra,
});

describe('POST /oauth2/token (RFC 8693)', () => {
  it('exchanges an identity token for an access token', async () => {
    const response = await exchange(await base({ ttl_seconds: '300' }));
    expect(response.status).toBe(200);
    // RFC 6749 section 5.1: a response holding a token is never cached, by HTTP/1.1 or HTTP/1.0 caches.
    expect(response.headers['cache-control']).toBe('no-store');
    expect(response.headers.pragma).toBe('no-cache');
    expect(response.body).toEqual({
      access_token: expect.any(String),
      issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      token_type: 'Bearer',
      expires_in: 300,
      scope: 'artifacts:read logs:read',
      request_id: expect.any(String),
    });
    expect(decodeJwt(response.body.access_token)).toMatchObject({ scope: 'artifacts:read logs:read', task_id: 'build-7', aud: 'registry.acme.internal' });
    // A lifetime above what policy allows is clamped, however large; zero is not a lifetime.
    for (const ttl of ['9999999999', '1000000000000000', String(Number.MAX_SAFE_INTEGER)]) {
      expect((await exchange(await base({ ttl_seconds: ttl }))).body.expires_in, ttl).toBe(900);
    }
    // As the JSON API: zero, or a number past what it takes (a safe integer), is no lifetime.
    for (const ttl of ['0', String(2 ** 53)]) {
      const refused = await exchange(await base({ ttl_seconds: ttl }));
      expect(refused.status, ttl).toBe(400);
      expect(refused.body.error_description).toMatch(/ttl_seconds must be a positive whole number/);
    }
  });

  it('accepts the id_token subject type too', async () => {
    const response = await exchange(await base({ subject_token_type: 'urn:ietf:params:oauth:token-type:id_token' }));
    expect(response.status).toBe(200);
  });

  it.each([
    ['another grant type', { grant_type: 'client_credentials' }, 'unsupported_grant_type'],
    ['an unacceptable subject token', { subject_token: 'not-a-jwt' }, 'invalid_request'],
    ['an unknown subject token type', { subject_token_type: 'urn:x:saml' }, 'invalid_request'],
    ['a missing task_id', { task_id: '' }, 'invalid_request'],
    ['a refused scope', { scope: 'model:deploy' }, 'invalid_scope'],
    ['an unknown scope', { scope: 'artifacts:read secrets:all' }, 'invalid_scope'],
    // RFC 6749 section 5.2: invalid_scope is for a scope "invalid, unknown, or malformed" too.
    ['a malformed scope', { scope: 'Artifacts:Read' }, 'invalid_scope'],
    ['a scope named twice', { scope: 'artifacts:read artifacts:read' }, 'invalid_scope'],
    ['an empty scope', { scope: ' ' }, 'invalid_scope'],
    ['a malformed scope and a missing task_id', { scope: 'Artifacts:Read', task_id: '' }, 'invalid_request'],
    ['the scope parameter twice', { scope: ['artifacts:read', 'logs:read'] }, 'invalid_request'],
    ['another requested token type', { requested_token_type: 'urn:ietf:params:oauth:token-type:id_token' }, 'invalid_request'],
  ])('answers %s with 400 %s', async (_name, override, error) => {
    const form = { ...(await base()), ...override };
    if (form.task_id === '') delete (form as Partial<typeof form>).task_id;
    const response = await exchange(form);
    expect(response.status).toBe(400);
    expect(response.body).toMatchObject({ error, error_description: expect.any(String) });
    expect(response.body).not.toHaveProperty('access_token');
  });

  it('answers a malformed scope of a child token invalid_scope too; /v1 keeps its validation problem', async () => {
    const parent = await exchange(await base());
    const child = await exchange({
      grant_type: GRANT,
      subject_token: parent.body.access_token,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      scope: 'Logs:Read',
    });
    expect(child.status).toBe(400);
    expect(child.body).toMatchObject({ error: 'invalid_scope', errors: [{ pointer: '#/scopes/0', detail: 'not a scope name' }] });
    const v1 = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ task_id: 'build-7', scopes: ['Artifacts:Read'], audience: 'registry.acme.internal' });
    expect(v1.status).toBe(400);
    expect(v1.body).toMatchObject({ type: 'urn:jit-broker:problem:invalid_request', errors: [{ pointer: '#/scopes/0', detail: 'not a scope name' }] });
  });

  it('answers a refused audience with invalid_target', async () => {
    const response = await exchange({ ...(await base()), subject_token: await t.as.ml(), scope: 'model:train', audience: 'elsewhere' });
    expect(response.status).toBe(400);
    expect(response.body.error).toBe('invalid_target');
  });

  it('refuses a repeated parameter (RFC 6749 section 3.2)', async () => {
    const response = await exchange({ ...(await base()), task_id: ['a', 'b'] });
    expect(response.status).toBe(400);
    expect(response.body.error).toBe('invalid_request');
  });

  it('treats a parameter sent without a value as omitted (RFC 6749 section 3.2)', async () => {
    // Optional parameters sent empty: the exchange is the one without them.
    for (const empty of ['ttl_seconds', 'justification', 'break_glass', 'requested_token_type', 'authorization_details', 'dpop_jkt', 'request_id', 'actor_token', 'token_type_hint']) {
      const response = await exchange({ ...(await base()), [empty]: '' });
      expect(response.status, empty).toBe(200);
      expect(response.body.expires_in, empty).toBe(900);
    }
    const { audience, ...form } = await base();
    const resource = await exchange({ ...form, audience: '', resource: audience });
    expect(resource.status).toBe(200);
    expect(decodeJwt(resource.body.access_token).aud).toBe(audience);
    // A required one sent empty is missing: invalid_request, as any missing parameter; an empty
    // grant_type is no other grant type.
    for (const required of ['grant_type', 'subject_token', 'subject_token_type', 'scope', 'task_id']) {
      const response = await exchange({ ...(await base()), [required]: '' });
      expect(response.status, required).toBe(400);
      expect(response.body.error, required).toBe('invalid_request');
    }
  });

  it('takes RFC 8707 resource as the audience when audience is absent', async () => {
    const { audience, ...form } = await base();
    const response = await exchange({ ...form, resource: audience });
    expect(response.status).toBe(200);
    expect(decodeJwt(response.body.access_token).aud).toBe('registry.acme.internal');
    // Both, naming the same target, is one target.
    const both = await exchange({ ...(await base()), resource: 'registry.acme.internal' });
    expect(both.status).toBe(200);
    // A resource the policy does not allow is refused like an audience.
    const refused = await exchange({ ...form, subject_token: await t.as.ml(), scope: 'model:train', resource: 'https://elsewhere.example' });
    expect(refused.status).toBe(400);
    expect(refused.body.error).toBe('invalid_target');
  });

  it.each([
    ['two audiences', { audience: ['registry.acme.internal', 'db.acme.internal'] }],
    ['two resources', { audience: undefined, resource: ['registry.acme.internal', 'db.acme.internal'] }],
    ['the same audience twice', { audience: ['registry.acme.internal', 'registry.acme.internal'] }],
    ['an audience and a different resource', { resource: 'db.acme.internal' }],
  ])('answers %s with 400 invalid_target, issuing nothing', async (_name, override) => {
    const form: Record<string, string | string[] | undefined> = { ...(await base()), ...override };
    for (const key of Object.keys(form)) if (form[key] === undefined) delete form[key];
    const response = await exchange(form as Record<string, string | string[]>);
    expect(response.status).toBe(400);
    expect(response.body).toEqual({ error: 'invalid_target', error_description: expect.any(String) });
  });

  it('answers authorization_pending for a request that needs approval, then collects it with request_id, once', async () => {
    const workload = await t.as.ml();
    const first = await exchange({ ...(await base()), subject_token: workload, scope: 'model:deploy' });
    expect(first.status).toBe(400);
    expect(first.body).toEqual({ error: 'authorization_pending', error_description: expect.any(String), request_id: expect.any(String) });
    expect(first.headers['cache-control']).toBe('no-store');
    expect(first.headers.pragma).toBe('no-cache');
    const requestId = first.body.request_id as string;

    const again = await exchange({ grant_type: GRANT, subject_token: workload, subject_token_type: JWT_TYPE, request_id: requestId });
    expect(again.body.error).toBe('authorization_pending');

    const view = await t.http.get(`/v1/credentials/${requestId}`).set(bearer(workload));
    const approver = await t.as.person('alice', ['approvers', 'ml-release']);
    const decided = await t.http
      .post(`/v1/credentials/${requestId}/approvals`)
      .set(bearer(approver))
      .send({ decision: 'approve', reason: 'ok', digest: view.body.digest });
    expect(decided.body.status).toBe('approved');

    // Another identity cannot collect it.
    const stranger = await exchange({ grant_type: GRANT, subject_token: await t.as.pipeline(), subject_token_type: JWT_TYPE, request_id: requestId });
    expect(stranger.status).toBe(400);
    expect(stranger.body.error).toBe('invalid_request');

    const collected = await exchange({ grant_type: GRANT, subject_token: workload, subject_token_type: JWT_TYPE, request_id: requestId });
    expect(collected.status).toBe(200);
    expect([collected.headers['cache-control'], collected.headers.pragma]).toEqual(['no-store', 'no-cache']);
    expect(decodeJwt(collected.body.access_token)).toMatchObject({
      request_id: requestId,
      approvers: [{ iss: 'https://sso.test', sub: 'alice', at: expect.any(String) }],
    });
    const twice = await exchange({ grant_type: GRANT, subject_token: workload, subject_token_type: JWT_TYPE, request_id: requestId });
    expect(twice.status).toBe(400);
    expect(twice.body.error).toBe('invalid_request');
  });

  it('carries break-glass as an extension parameter', async () => {
    const response = await exchange({
      ...(await base()),
      subject_token: await t.as.person('oncall-olga', ['on-call']),
      scope: 'model:deploy',
      audience: 'registry.acme.internal',
      break_glass: 'true',
      justification: 'registry is down, rolling back the bad model now',
    });
    expect(response.status).toBe(200);
    expect(decodeJwt(response.body.access_token)).toMatchObject({ break_glass: true, scope: 'model:deploy' });
    expect(response.body.expires_in).toBe(300); // break-glass maxTtl 5m
  });
});
