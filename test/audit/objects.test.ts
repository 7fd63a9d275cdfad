import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, startTestBroker, withModelRelease, type TestBroker } from '../helpers/broker.js';

/**
 * CONTRACT section 4: `GET /v1/audit/issuances` filters by `type` and `identifier` of an
 * authorization_details entry, and an entry need not name an object.
 */

let t: TestBroker;
const ids: Record<string, string> = {};

beforeAll(async () => {
  t = await startTestBroker({ configure: (config) => withModelRelease(config as Record<string, any>) });
  const read = { task_id: 'read', scopes: ['artifacts:read'], audience: 'registry.acme.internal' };
  const post = async (details: unknown) =>
    (await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ ...read, authorization_details: details })).body.request_id as string;
  ids.unnamed = await post([{ type: 'model', actions: ['read'] }]);
  ids.named = await post([{ type: 'model', identifier: 'fraud-v1', actions: ['read'] }]);
});
afterAll(async () => {
  await t.close();
});

const found = async (query: string) => {
  const response = await t.http.get(`/v1/audit/issuances${query}`).set(bearer(await t.as.person('ivy', ['auditors'])));
  expect(response.status).toBe(200);
  return (response.body.items as { request_id: string }[]).map((row) => row.request_id).sort();
};

describe('an entry', () => {
  it('may hold empty lists: they are arrays of text (CONTRACT section 4), kept as sent', async () => {
    const details = [{ type: 'model', identifier: 'churn-v2', actions: [], locations: [] }];
    const issued = await t.http
      .post('/v1/credentials')
      .set(bearer(await t.as.pipeline()))
      .send({ task_id: 'read', scopes: ['artifacts:read'], audience: 'registry.acme.internal', authorization_details: details });
    expect(issued.status).toBe(201);
    expect(issued.body.authorization_details).toEqual(details);
    ids.empty = issued.body.request_id;
  });
});

describe('the type and identifier filters', () => {
  it('find by type every entry of that type, naming an object or not; by identifier, those naming it', async () => {
    expect(await found('?type=model')).toEqual([ids.named, ids.unnamed, ids.empty].sort());
    expect(await found('?identifier=Fraud-V1')).toEqual([ids.named]);
    expect(await found('?type=model&identifier=fraud-v1')).toEqual([ids.named]);
  });

  it('refuses an identifier that names no object once normalised (400), for issuances and custody', async () => {
    const auditor = await t.as.person('ivy', ['auditors']);
    for (const path of ['/v1/audit/issuances?identifier=%E2%80%8B', '/v1/audit/duties?duty=model-release&identifier=%E3%85%A4']) {
      const response = await t.http.get(path).set(bearer(auditor));
      expect(response.status).toBe(400);
      expect(JSON.stringify(response.body)).toMatch(/identifier.*names no object/);
    }
  });

  it('finds the requests recorded before entries without an identifier were kept: the migration adds them', async () => {
    await t.db.sql("DELETE FROM request_objects WHERE object = ''");
    expect(await found('?type=model')).toEqual([ids.named, ids.empty].sort());
    await t.db.sql("DELETE FROM schema_migrations WHERE name LIKE '%request_objects_unnamed%'");
    await t.restart();
    expect(await found('?type=model')).toEqual([ids.named, ids.unnamed, ids.empty].sort());
  });
});
