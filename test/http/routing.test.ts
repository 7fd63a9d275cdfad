import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';

/**
 * A path is one spelling (RFC 3986 section 6.2.2.1: only the scheme and host are compared without
 * regard to case): another letter case is no endpoint, a 404 like any unknown path, on every
 * router, never an endpoint that renders its errors in another form and checks DPoP proofs
 * against a path the caller did not name.
 */

let t: TestBroker;
let requestId: string;
beforeAll(async () => {
  t = await startTestBroker();
  const issued = await t.http
    .post('/v1/credentials')
    .set(bearer(await t.as.pipeline()))
    .send({ task_id: 'build-1', scopes: ['artifacts:read'], audience: 'registry.acme.internal' });
  requestId = issued.body.request_id;
});
afterAll(async () => {
  await t.close();
});

type Caller = 'pipeline' | 'auditor' | 'introspector' | 'nobody';
const token = (caller: Caller) =>
  caller === 'pipeline'
    ? t.as.pipeline()
    : caller === 'auditor'
      ? t.as.person('erin', ['auditors'])
      : caller === 'introspector'
        ? t.as.pipeline({}, 'resource-server:registry')
        : undefined;
const send = async (method: 'get' | 'post', path: string, caller: Caller) => {
  const request = t.http[method](path.replace('{id}', requestId));
  const presented = await token(caller);
  return presented ? request.set(bearer(presented)) : request;
};

describe('routing', () => {
  it.each([
    // [method, the endpoint, another spelling of it, who calls]
    ['post', '/oauth2/token', '/OAuth2/Token', 'nobody'],
    ['post', '/oauth2/token', '/oauth2/Token', 'nobody'],
    ['post', '/oauth2/introspect', '/oauth2/INTROSPECT', 'introspector'],
    ['get', '/v1/credentials', '/V1/credentials', 'pipeline'],
    ['get', '/v1/credentials', '/v1/Credentials', 'pipeline'],
    ['get', '/v1/credentials/{id}', '/v1/CREDENTIALS/{id}', 'pipeline'],
    ['post', '/v1/credentials/{id}/complete', '/v1/credentials/{id}/Complete', 'pipeline'],
    ['get', '/v1/revocations', '/v1/Revocations', 'introspector'],
    ['get', '/v1/audit/events', '/v1/Audit/events', 'auditor'],
    ['get', '/v1/audit/events', '/v1/audit/Events', 'auditor'],
    ['get', '/.well-known/jwks.json', '/.well-known/JWKS.json', 'nobody'],
    ['get', '/healthz', '/Healthz', 'nobody'],
    ['get', '/console/audit', '/Console/audit', 'nobody'],
    ['get', '/console/audit', '/console/Audit', 'nobody'],
    ['get', '/console/assets/console.css', '/console/Assets/console.css', 'nobody'],
  ] as const)('%s %s is served; %s is no endpoint (404)', async (method, served, other, caller) => {
    expect((await send(method, served, caller)).status, served).not.toBe(404);
    const response = await send(method, other, caller);
    expect(response.status).toBe(404);
    if (other.startsWith('/oauth2/')) {
      // Under /oauth2, an OAuth error (CONTRACT section 4: a registered code), still a 404.
      expect(response.headers['content-type']).toMatch(/^application\/json/);
      expect(response.body).toEqual({ error: 'invalid_request', error_description: `No such endpoint: ${method.toUpperCase()} ${other}` });
    } else {
      expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(response.body).toMatchObject({ type: 'urn:jit-broker:problem:not_found', status: 404 });
    }
  });
});

describe('a method an endpoint does not take', () => {
  it.each([
    // [method, path, who calls, what Allow names]
    ['get', '/oauth2/token', 'nobody', 'POST'],
    ['put', '/oauth2/introspect', 'introspector', 'POST'],
    ['delete', '/v1/credentials/{id}', 'pipeline', 'GET, HEAD'],
    ['put', '/v1/credentials', 'pipeline', 'GET, HEAD, POST'],
    ['get', '/v1/credentials/{id}/complete', 'pipeline', 'POST'],
    ['post', '/v1/audit/events', 'auditor', 'GET, HEAD'],
    ['post', '/.well-known/jwks.json', 'nobody', 'GET, HEAD'],
    ['delete', '/healthz', 'nobody', 'GET, HEAD'],
  ] as const)('%s %s is 405, naming what it takes in Allow (RFC 9110 section 15.5.6)', async (method, path, caller, allow) => {
    const presented = await token(caller);
    const request = t.http[method](path.replace('{id}', requestId));
    const response = await (presented ? request.set(bearer(presented)) : request);
    expect(response.status).toBe(405);
    expect(response.headers.allow).toBe(allow);
    if (path.startsWith('/oauth2/')) expect(response.body).toMatchObject({ error: 'invalid_request' });
    else expect(response.body).toMatchObject({ type: 'urn:jit-broker:problem:invalid_request', status: 405 });
  });

  it('still asks an identity first under /v1: no caller learns what a path takes without one', async () => {
    const response = await t.http.delete(`/v1/credentials/${requestId}`);
    expect(response.status).toBe(401);
  });
});
