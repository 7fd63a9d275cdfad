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
});
