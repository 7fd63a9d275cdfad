import { afterEach, describe, expect, it } from 'vitest';
import { MAX_AUTHORIZATION_DETAILS_BYTES } from '../../src/shared/authorization-details.js';
import { MAX_ACCESS_TOKEN_BYTES, mintAccessToken } from '../../src/tokens/index.js';
import { bearer, startTestBroker, withModelRelease, type TestBroker } from '../helpers/broker.js';

/**
 * The largest token a request can make the broker mint is still one the broker reads back as its
 * own: introspected active, exchanged for a child, revoked by its holder. A revocation that
 * quietly did nothing would leave a token its holder believes dead.
 */

let t: TestBroker;
afterEach(async () => {
  await t?.close();
});

const ACCESS = 'urn:ietf:params:oauth:token-type:access_token';
const GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';

/** 16 models, each with long actions: as much authorization_details as a request may carry, under `bytes`. */
function detailsOf(bytes: number) {
  const details = Array.from({ length: 16 }, (_, i) => ({ type: 'model', identifier: `fraud-${i}-${'v'.repeat(200)}`, actions: [] as string[] }));
  for (let i = 0; ; i = (i + 1) % 16) {
    details[i]!.actions.push('a'.repeat(100));
    if (Buffer.byteLength(JSON.stringify(details)) > bytes) return details;
  }
}
const fitting = () => {
  const details = detailsOf(MAX_AUTHORIZATION_DETAILS_BYTES);
  details[details.findIndex((d) => d.actions.length > 0)]!.actions.pop();
  return details;
};

describe('a token as large as a request can make it', () => {
  it('is introspected, exchanged for a child and revoked like any other', async () => {
    t = await startTestBroker({ configure: (config) => withModelRelease(config) });
    const trainer = await t.as.ml();
    const body = { task_id: 'train', scopes: ['model:train'], audience: 'registry.acme.internal', authorization_details: fitting() };
    const granted = await t.http.post('/v1/credentials').set(bearer(trainer)).send(body);
    expect(granted.status, JSON.stringify(granted.body)).toBe(201);
    const token = granted.body.access_token as string;
    expect(token.length).toBeGreaterThan(8 * 1024); // past the bound on identity tokens
    expect(token.length).toBeLessThanOrEqual(MAX_ACCESS_TOKEN_BYTES);

    const introspector = await t.as.pipeline({}, 'resource-server:registry');
    const introspect = async () => (await t.http.post('/oauth2/introspect').set(bearer(introspector)).type('form').send({ token })).body;
    expect(await introspect()).toMatchObject({ active: true });
    const child = await t.http.post('/oauth2/token').type('form').send({ grant_type: GRANT, subject_token: token, subject_token_type: ACCESS, scope: 'model:train' });
    expect(child.status, JSON.stringify(child.body)).toBe(200);

    expect((await t.http.post('/oauth2/revoke').set(bearer(trainer)).type('form').send({ token })).status).toBe(200);
    expect(await introspect()).toEqual({ active: false });
    expect((await t.http.get(`/v1/credentials/${granted.body.request_id}`).set(bearer(trainer))).body.status).toBe('revoked');
  });

  it('is bounded where it is asked: more authorization_details are refused, and nothing is recorded', async () => {
    t = await startTestBroker({ configure: (config) => withModelRelease(config) });
    const body = { task_id: 'train', scopes: ['model:train'], audience: 'registry.acme.internal', authorization_details: detailsOf(MAX_AUTHORIZATION_DETAILS_BYTES) };
    const refused = await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send(body);
    expect(refused.status).toBe(400);
    expect(refused.body.detail).toContain(`at most ${MAX_AUTHORIZATION_DETAILS_BYTES} bytes`);
    expect(await t.db.sql('SELECT id FROM requests')).toEqual([]);
  });
});

describe('minting', () => {
  it('refuses a token larger than the broker reads back as its own', async () => {
    t = await startTestBroker();
    const huge = Array.from({ length: 200 }, (_, i) => ({ type: 'model', identifier: `m-${i}-${'x'.repeat(200)}` }));
    const grant = { sub: 's', aud: 'a', idp: 'ci', scopes: ['artifacts:read'], taskId: 't', requestId: 'r', approvers: [], breakGlass: false, ttlSeconds: 60, authorizationDetails: huge };
    await expect(mintAccessToken(t.broker.keyring, 'http://broker.test', grant, Date.now(), { clockSkewMs: 30_000 })).rejects.toThrow(/more than the 32768 a broker token may be/);
  });
});
