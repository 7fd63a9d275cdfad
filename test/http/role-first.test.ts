import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';

/**
 * CONTRACT section 4: a caller without the role a listing or endpoint needs gets 403, whatever
 * else is wrong with what it asks: who may ask is judged before what is asked, so an outsider
 * learns nothing of the parameters.
 */
let t: TestBroker;
beforeAll(async () => {
  t = await startTestBroker();
});
afterAll(async () => {
  await t.close();
});

describe('a caller without the role', () => {
  it('gets 403 before its query or form is read: break-glass listing, revocation list, introspection', async () => {
    const pipeline = await t.as.pipeline();
    for (const path of ['/v1/break-glass?review=bogus', '/v1/revocations?limit=0', '/v1/audit/issuances?limit=0']) {
      const refused = await t.http.get(path).set(bearer(pipeline));
      expect(refused.status, path).toBe(403);
      expect(refused.body.type).toMatch(/policy_denied$/);
    }
    const introspect = await t.http.post('/oauth2/introspect').set(bearer(pipeline)).type('form').send({});
    expect(introspect.status).toBe(403);
    expect(introspect.body.error).toBe('insufficient_scope');
    // The control: with the role, the same bad input is the 400 it is.
    const auditor = await t.as.person('ivy', ['auditors']);
    expect((await t.http.get('/v1/break-glass?review=bogus').set(bearer(auditor))).status).toBe(400);
  });

  it('gets 401 without an identity, and 403 without the role, before the form is read at /oauth2: a body too large or not UTF-8 is not the answer', async () => {
    const form = (path: string, body: string | Buffer, token?: string) => {
      const request = t.http.post(path).set('content-type', 'application/x-www-form-urlencoded');
      return (token ? request.set(bearer(token)) : request).send(body);
    };
    const large = `token=${'a'.repeat(70_000)}`;
    const notUtf8 = Buffer.concat([Buffer.from('token='), Buffer.from([0xff, 0xfe])]);
    for (const path of ['/oauth2/introspect', '/oauth2/revoke']) {
      for (const body of [large, notUtf8]) {
        for (const token of [undefined, 'not-a-jwt']) {
          const refused = await form(path, body, token);
          expect(refused.status, `${path} ${token ?? 'no identity'}`).toBe(401);
          expect(refused.body.error).toBe('invalid_token');
          expect(refused.headers['www-authenticate']).toBe(token ? 'Bearer error="invalid_token"' : 'Bearer');
        }
      }
    }
    const pipeline = await t.as.pipeline();
    for (const body of [large, notUtf8]) {
      const introspect = await form('/oauth2/introspect', body, pipeline);
      expect(introspect.status).toBe(403);
      expect(introspect.body.error).toBe('insufficient_scope');
    }
    // The control: a caller who may ask gets the refusal of what it sent.
    const introspector = await t.as.pipeline({}, 'resource-server:registry');
    expect((await form('/oauth2/introspect', large, introspector)).status).toBe(413);
    expect((await form('/oauth2/introspect', notUtf8, introspector)).status).toBe(400);
    expect((await form('/oauth2/revoke', large, pipeline)).status).toBe(413);
  });
});
