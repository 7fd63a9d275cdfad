import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuthenticator } from '../../src/http/auth.js';
import { exchange } from '../../src/http/oauth/token-exchange.js';
import { InvalidRequest } from '../../src/shared/errors.js';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { allEvents } from '../helpers/records.js';

/**
 * CONTRACT section 4: text that is not well-formed Unicode is refused (400), in every text field
 * of every body, form and query. JSON's \uD800 escapes put a lone surrogate in any field, and the
 * two engines store one as different bytes: the stored record and its digest would then depend on
 * the engine. Nothing of such a request is written.
 */

const LONE = '\uD800';
const body = { task_id: 'build', scopes: ['artifacts:read'], audience: 'registry.acme.internal' };
const deploy = { task_id: 'deploy', scopes: ['model:deploy'], audience: 'registry.acme.internal' };

let t: TestBroker;
beforeAll(async () => {
  t = await startTestBroker();
});
afterAll(async () => {
  await t.close();
});

const expectRefused = (response: { status: number; body: { type?: string; errors?: { pointer: string; detail: string }[] } }, pointer: string) => {
  expect(response.status).toBe(400);
  expect(response.body.type).toMatch(/invalid_request$/);
  expect(response.body.errors).toEqual([{ pointer, detail: 'must be well-formed Unicode (no lone surrogates)' }]);
};

describe('lone surrogates', () => {
  it.each([
    ['task_id', { ...body, task_id: `build-${LONE}` }, '#/task_id'],
    ['audience', { ...body, audience: `registry${LONE}` }, '#/audience'],
    ['justification', { ...body, justification: `because ${LONE}` }, '#/justification'],
    ['a scope', { ...body, scopes: ['artifacts:read', `x${LONE}`] }, '#/scopes/1'],
    ['a low surrogate alone', { ...body, task_id: '\uDC00build' }, '#/task_id'],
    ['a field name', { ...body, [`x${LONE}`]: 1 }, `#/x${LONE}`],
  ])('are refused in %s of POST /v1/credentials, and nothing is recorded', async (_field, payload, pointer) => {
    const before = (await allEvents(t)).length;
    const requests = await t.db.sql<{ n: number }>('SELECT count(*) AS n FROM requests');
    expectRefused(await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send(payload), pointer);
    expect((await allEvents(t)).length).toBe(before);
    expect(await t.db.sql('SELECT count(*) AS n FROM requests')).toEqual(requests);
  });

  it('are refused in decisions, reviews and revocations', async () => {
    const pending = await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send(deploy);
    expect(pending.status).toBe(202);
    const approver = await t.as.person('alice', ['approvers', 'ml-release']);
    const decision = { decision: 'approve', reason: `fine ${LONE}`, digest: pending.body.digest };
    expectRefused(await t.http.post(`/v1/credentials/${pending.body.request_id}/approvals`).set(bearer(approver)).send(decision), '#/reason');
    expect((await t.http.get(`/v1/credentials/${pending.body.request_id}`).set(bearer(approver))).body.approvals).toEqual([]);

    const review = { outcome: 'justified', notes: `ok ${LONE}` };
    expectRefused(await t.http.post(`/v1/credentials/${pending.body.request_id}/review`).set(bearer(approver)).send(review), '#/notes');

    const issued = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send(body);
    const revoke = await t.http.post(`/v1/credentials/${issued.body.request_id}/revoke`).set(bearer(await t.as.pipeline())).send({ reason: `done${LONE}` });
    expectRefused(revoke, '#/reason');
    expect((await t.http.get(`/v1/credentials/${issued.body.request_id}`).set(bearer(await t.as.pipeline()))).body.status).toBe('issued');
  });

  it('are refused in a token exchange form, before the subject token is even read', async () => {
    // A form's bytes are decoded as UTF-8 (a lone surrogate arrives as U+FFFD), so this calls the
    // endpoint's parser as a form parser that kept one would.
    const form = {
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: await t.as.pipeline(),
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      scope: 'artifacts:read',
      audience: 'registry.acme.internal',
      task_id: `build${LONE}`,
    };
    const before = (await allEvents(t)).length;
    const auth = createAuthenticator(t.broker.settings, t.broker.metrics);
    const refused = await exchange(form, { auth, credentials: t.broker.credentials }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(InvalidRequest);
    expect((refused as InvalidRequest).extensions.errors).toEqual([{ pointer: '#/task_id', detail: 'must be well-formed Unicode (no lone surrogates)' }]);
    expect((await allEvents(t)).length).toBe(before);
  });

  it('are still fine as well-formed pairs: an emoji is text like any other', async () => {
    const response = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ ...body, task_id: 'build 🚀' });
    expect(response.status).toBe(201);
  });
});
