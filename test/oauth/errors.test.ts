import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';

/**
 * CONTRACT section 4: every `/oauth2` error uses a code registered by RFC 6749, 6750, 7009, 7662,
 * 8628, 8693 or 8707, so an OAuth client library understands every refusal. Problem types such as
 * `policy_denied` or `rate_limited` belong to `/v1` alone.
 */
const REGISTERED = new Set([
  'invalid_request', 'invalid_client', 'invalid_grant', 'unauthorized_client', 'unsupported_grant_type', 'invalid_scope',
  'access_denied', 'unsupported_response_type', 'server_error', 'temporarily_unavailable', // RFC 6749
  'invalid_token', 'insufficient_scope', // RFC 6750
  'unsupported_token_type', // RFC 7009
  'authorization_pending', 'slow_down', 'expired_token', // RFC 8628
  'invalid_target', // RFC 8707 and RFC 8693
  'invalid_authorization_details', // RFC 9396
  'invalid_dpop_proof', 'use_dpop_nonce', // RFC 9449
]);

const GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';

let t: TestBroker;
beforeAll(async () => {
  t = await startTestBroker({ configure: (c) => (c.limits = { requestsPerMinute: 2 }) });
});
afterAll(async () => {
  await t.close();
});

const form = (path: string, body: Record<string, string>, token?: string) => {
  const request = t.http.post(path).type('form');
  return (token ? request.set(bearer(token)) : request).send(body);
};
// A fresh job and person each time: limits count per identity and per person.
let callers = 0;
const freshCaller = () => {
  callers += 1;
  return t.as.pipeline({ actor: `dev-${callers}` }, `repo:acme/errors-${callers}`);
};
const exchange = async (extra: Record<string, string> = {}, subject?: string) =>
  form('/oauth2/token', {
    grant_type: GRANT,
    subject_token: subject ?? (await freshCaller()),
    subject_token_type: JWT_TYPE,
    scope: 'artifacts:read',
    audience: 'registry.acme.internal',
    task_id: 'build-1',
    ...extra,
  });

describe('/oauth2 errors', () => {
  it('answers a caller without the introspector role 403 insufficient_scope (RFC 6750), not policy_denied', async () => {
    const grant = await exchange();
    const response = await form('/oauth2/introspect', { token: grant.body.access_token }, await t.as.pipeline());
    expect(response.status).toBe(403);
    expect(response.body).toEqual({ error: 'insufficient_scope', error_description: expect.any(String), required_roles: ['introspector'] });
    expect(response.headers['www-authenticate']).toBe('Bearer error="insufficient_scope"');
  });

  it('answers a spent limit 429 slow_down with Retry-After', async () => {
    const subject = await freshCaller();
    expect((await exchange({}, subject)).status).toBe(200);
    expect((await exchange({}, subject)).status).toBe(200);
    const response = await exchange({}, subject);
    expect(response.status).toBe(429);
    expect(response.body).toMatchObject({ error: 'slow_down', error_description: expect.stringMatching(/in any 60 seconds/) });
    expect(Number(response.headers['retry-after'])).toBeGreaterThan(0);
    // Under /v1 the same refusal keeps its problem type.
    const v1 = await t.http.post('/v1/credentials').set(bearer(subject)).send({ task_id: 'x', scopes: ['artifacts:read'], audience: 'x' });
    expect(v1.status).toBe(429);
    expect(v1.body.type).toBe('urn:jit-broker:problem:rate_limited');
  });

  it('uses registered codes only, on every endpoint, whatever goes wrong', async () => {
    const grant = await exchange();
    const stranger = await t.as.pipeline({}, 'repo:acme/stranger');
    const introspector = await t.as.pipeline({}, 'resource-server:registry');
    const responses = [
      await form('/oauth2/token', {}),
      await form('/oauth2/token', { grant_type: 'client_credentials' }),
      await exchange({ subject_token: 'forged' }),
      await exchange({ scope: 'secrets:all' }),
      await exchange({ scope: 'model:deploy' }),
      await exchange({ audience: 'a', resource: 'b' }),
      await exchange({ request_id: 'no-such-request' }),
      await exchange({ break_glass: 'true', scope: 'logs:read', justification: 'short' }),
      await exchange({ actor_token: 'forged', actor_token_type: JWT_TYPE }),
      await exchange({ actor_token: await freshCaller() }),
      await exchange({ authorization_details: '[{"type":"nope"}]' }),
      await exchange({ subject_token: grant.body.access_token, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token', scope: 'secrets:all' }),
      await exchange({ subject_token: 'not-a-token', subject_token_type: 'urn:ietf:params:oauth:token-type:access_token' }),
      await t.http.post('/oauth2/token').set('DPoP', 'garbage').type('form').send({ grant_type: GRANT, subject_token: await freshCaller(), subject_token_type: JWT_TYPE, scope: 'artifacts:read', audience: 'x', task_id: 'x' }),
      await t.http.post('/oauth2/token').set('content-type', 'application/x-www-form-urlencoded').send('a'.repeat(70_000)),
      await form('/oauth2/introspect', { token: grant.body.access_token }),
      await form('/oauth2/introspect', { token: grant.body.access_token }, 'not-a-jwt'),
      await form('/oauth2/introspect', {}, introspector),
      await form('/oauth2/introspect', { token: grant.body.access_token }, stranger),
      await form('/oauth2/revoke', { token: grant.body.access_token }),
      await form('/oauth2/revoke', {}, stranger),
      await form('/oauth2/revoke', { token: grant.body.access_token }, stranger),
      await t.http.get('/oauth2/token'),
    ];
    for (const response of responses) {
      expect(response.status).toBeGreaterThanOrEqual(400);
      expect(response.headers['content-type']).toMatch(/^application\/json/);
      expect(REGISTERED, `${response.status} ${JSON.stringify(response.body)}`).toContain(response.body.error);
      expect(response.text).not.toMatch(/\bat .*\.(ts|js):\d+/); // no stack trace
    }
  });
});
