import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OPERATIONS } from '../../src/http/openapi/index.js';
import { bearer, startTestBroker, withModelRelease, type TestBroker } from '../helpers/broker.js';

/**
 * An integer in a query is plain decimal digits, nothing else: `limit=1e2` or `limit=0x10` is a
 * 400 naming the parameter, not a page of 100 or 16. A client that sends such a spelling has a
 * bug the broker should tell it of, and a proxy or cache in between may read it otherwise.
 */

let t: TestBroker;
beforeAll(async () => {
  t = await startTestBroker({ configure: (config) => withModelRelease(config) });
});
afterAll(async () => {
  await t.close();
});

/** Every listing that takes `limit`, and who may list it. */
const callers: Record<string, () => Promise<string>> = {
  '/v1/credentials': () => t.as.pipeline(),
  '/v1/approvals': () => t.as.person('alice', ['approvers']),
  '/v1/break-glass': () => t.as.person('ivy', ['auditors']),
  '/v1/revocations': () => t.as.pipeline({}, 'resource-server:x'),
  '/v1/audit/issuances': () => t.as.person('ivy', ['auditors']),
  '/v1/audit/events': () => t.as.person('ivy', ['auditors']),
  '/v1/audit/duties': () => t.as.person('ivy', ['auditors']),
};
/** Parameters a listing needs besides `limit`. */
const required: Record<string, string> = { '/v1/audit/duties': 'duty=model-release&identifier=fraud-v1&' };

const listings = OPERATIONS.filter((operation) => operation.query?.shape.limit !== undefined).map((operation) => operation.path);

/** Spellings JavaScript's Number() reads as a whole number from 1 to 1000 (or a 400 already, kept as one). */
const spellings = ['1e2', '0x10', '0b11', '0o7', ' 10', '10 ', '+10', '10.0', '10.', '.1e2', '1_0', '１０', '-0', '', 'Infinity', '1e309'];

describe('integer query parameters', () => {
  it('covers every listing that takes limit', () => {
    expect(listings.sort()).toEqual(Object.keys(callers).sort());
  });

  it.each(listings)('%s: limit other than plain decimal digits is a 400 naming limit', async (path) => {
    const token = await callers[path]!();
    for (const spelling of spellings) {
      const response = await t.http.get(`${path}?${required[path] ?? ''}limit=${encodeURIComponent(spelling)}`).set(bearer(token));
      expect(response.status, `${path} limit=${JSON.stringify(spelling)}`).toBe(400);
      expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
      expect(response.body).toMatchObject({ type: 'urn:jit-broker:problem:invalid_request', title: 'Invalid request', status: 400 });
      expect(response.body.detail).toMatch(/\blimit\b/);
      expect(response.body.errors, `${path} limit=${JSON.stringify(spelling)}`).toEqual([{ pointer: '#/limit', detail: expect.stringMatching(/1 to 1000/) }]);
    }
  });

  it.each(listings)('%s: limit=10 is a page', async (path) => {
    const response = await t.http.get(`${path}?${required[path] ?? ''}limit=10`).set(bearer(await callers[path]!()));
    expect(response.status, response.text).toBe(200);
    expect(response.body).toMatchObject({ items: expect.any(Array) });
  });

  it('reads the digits as a decimal number of items', async () => {
    const pipeline = await t.as.pipeline({}, 'repo:acme/paging:main');
    for (const task of ['a', 'b', 'c']) {
      const issued = await t.http.post('/v1/credentials').set(bearer(pipeline)).send({ task_id: task, scopes: ['artifacts:read'], audience: 'registry.acme.internal' });
      expect(issued.status).toBe(201);
    }
    const page = async (limit: string) => (await t.http.get(`/v1/credentials?limit=${limit}`).set(bearer(pipeline))).body;
    expect((await page('2')).items).toHaveLength(2);
    expect((await page('2')).next_cursor).not.toBeNull();
    expect((await page('10')).items).toHaveLength(3);
    expect((await page('10')).next_cursor).toBeNull();
    expect((await page('1000')).items).toHaveLength(3);
  });
});
