import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuthenticator } from '../../src/http/auth.js';
import { exchange } from '../../src/http/oauth/token-exchange.js';
import { InvalidRequest } from '../../src/shared/errors.js';
import { BROKER_ISSUER, bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
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

describe('NUL (U+0000)', () => {
  const NUL = '\u0000';
  const requestCount = async () => (await t.db.sql<{ n: number | string }>('SELECT count(*) AS n FROM requests'))[0]?.n;

  it('is refused in a body and a query, naming the field', async () => {
    const response = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ ...body, [`task${NUL}`]: 'x' });
    expect(response.status).toBe(400);
    expect(response.body.errors).toEqual([{ pointer: `#/task${NUL}`, detail: 'must not hold NUL (U+0000)' }]);
    const auditor = await t.as.person('ivy', ['auditors']);
    for (const [path, field] of [['/v1/audit/events', 'request_id'], ['/v1/audit/events', 'type'], ['/v1/audit/issuances', 'subject']]) {
      const query = await t.http.get(`${path}?${field}=a%00b`).set(bearer(auditor));
      expect(query.status, `${path} ${field}`).toBe(400);
      expect(query.body.errors, `${path} ${field}`).toEqual([{ pointer: `#/${field}`, detail: 'must not hold NUL (U+0000)' }]);
    }
  });

  it('in any claim of an identity token refuses the token (401), on either engine alike', async () => {
    const before = await requestCount();
    for (const token of [
      await t.as.pipeline({}, `repo:acme/app:ref:refs/heads/main${NUL}x`),
      await t.as.pipeline({ actor: `pat${NUL}` }),
      await t.as.pipeline({ repository: `acme/app${NUL}` }),
    ]) {
      const response = await t.http.post('/v1/credentials').set(bearer(token)).send(body);
      expect(response.status).toBe(401);
      expect(response.headers['www-authenticate']).toMatch(/invalid_token/);
    }
    expect(await requestCount()).toEqual(before);
  });

  it('in a DPoP proof\'s jti refuses the proof (400 naming DPoP), and nothing is granted', async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    const proof = await new SignJWT({ jti: `j${NUL}x`, htm: 'POST', htu: `${BROKER_ISSUER}/v1/credentials`, iat: Math.floor(t.clock() / 1000) })
      .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: (await exportJWK(publicKey)) as JWK })
      .sign(privateKey as CryptoKey);
    const before = await requestCount();
    const response = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).set('DPoP', proof).send(body);
    expect(response.status).toBe(400);
    expect(response.body.detail).toMatch(/DPoP proof has a jti .*no NUL/);
    expect(await requestCount()).toEqual(before);
  });

  it('in a request id of a path names no request: 404, the id not echoed, for every endpoint under it', async () => {
    const ml = await t.as.ml();
    for (const [method, path] of [['get', ''], ['post', '/token'], ['post', '/complete'], ['post', '/revoke'], ['post', '/approvals'], ['post', '/review']] as const) {
      const response = await t.http[method](`/v1/credentials/a%00b${path}`).set(bearer(ml)).send(method === 'post' ? { reason: 'r' } : undefined);
      expect(response.status, path).toBe(404);
      expect(response.body.detail).toBe('No request that you may see has this id.');
    }
    // An id of another shape is no request either, and a request's own id still is one.
    expect((await t.http.get('/v1/credentials/NOPE').set(bearer(ml))).status).toBe(404);
    const pending = await t.http.post('/v1/credentials').set(bearer(ml)).send(deploy);
    expect((await t.http.get(`/v1/credentials/${pending.body.request_id}`).set(bearer(ml))).status).toBe(200);
  });
});

describe('control characters and sizes', () => {
  it('are refused in the audit filters, naming each', async () => {
    const auditor = await t.as.person('ivy', ['auditors']);
    for (const [path, pointer] of [
      ['/v1/audit/events?request_id=a%01b', '#/request_id'],
      ['/v1/audit/events?type=token.%1Bissued', '#/type'],
      ['/v1/audit/issuances?subject=repo%07', '#/subject'],
    ] as const) {
      const refused = await t.http.get(path).set(bearer(auditor));
      expect(refused.status, path).toBe(400);
      expect(refused.body.errors).toEqual([{ pointer, detail: 'must not contain control characters or bidirectional overrides' }]);
    }
  });

  it('refuse a body over 64 KiB with 413, whatever type it says it is', async () => {
    for (const type of ['application/json', 'text/plain']) {
      const refused = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).set('content-type', type).send('x'.repeat(70_000));
      expect(refused.status, type).toBe(413);
    }
    // The /oauth2 endpoints read forms only; another type over the limit is 413 there too, an OAuth error.
    const introspector = await t.as.pipeline({}, 'resource-server:registry');
    for (const type of ['application/json', 'text/plain', 'application/x-www-form-urlencoded']) {
      for (const [path, token] of [['/oauth2/token', undefined], ['/oauth2/introspect', introspector], ['/oauth2/revoke', introspector]] as const) {
        const request = t.http.post(path).set('content-type', type);
        const refused = await (token ? request.set(bearer(token)) : request).send('x'.repeat(70_000));
        expect(refused.status, `${path} ${type}`).toBe(413);
        expect(refused.body).toEqual({ error: 'invalid_request', error_description: 'The request body is larger than 64 KiB.' });
      }
    }
  });

  it('draw the 64 KiB line at its byte: 65,536 bytes are read, 65,537 are 413, as JSON and as a form', async () => {
    const json = (bytes: number) => {
      const shell = JSON.stringify({ ...body, pad: '' });
      return JSON.stringify({ ...body, pad: 'p'.repeat(bytes - shell.length) });
    };
    const form = (bytes: number) => {
      const shell = 'grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&pad=';
      return `${shell}${'p'.repeat(bytes - shell.length)}`;
    };
    const job = await t.as.pipeline();
    for (const [bytes, refused] of [[65_536, false], [65_537, true]] as const) {
      const v1 = await t.http.post('/v1/credentials').set(bearer(job)).set('content-type', 'application/json').send(json(bytes));
      const oauth = await t.http.post('/oauth2/token').type('form').send(form(bytes));
      expect(Buffer.byteLength(json(bytes))).toBe(bytes);
      expect(Buffer.byteLength(form(bytes))).toBe(bytes);
      expect([v1.status === 413, oauth.status === 413], `${bytes} bytes`).toEqual([refused, refused]);
    }
  });
});

describe('unknown query fields', () => {
  it('are refused (400) where an endpoint takes none, as in a body; the listing takes its own', async () => {
    const job = await t.as.pipeline();
    const made = await t.http.post('/v1/credentials?status=issued').set(bearer(job)).send(body);
    expect(made.status).toBe(400);
    expect(made.body.errors).toEqual([expect.objectContaining({ pointer: '#/status' })]);
    const issued = await t.http.post('/v1/credentials').set(bearer(job)).send(body);
    expect((await t.http.get(`/v1/credentials/${issued.body.request_id}?foo=1`).set(bearer(job))).status).toBe(400);
    expect((await t.http.get(`/v1/credentials/${issued.body.request_id}`).set(bearer(job))).status).toBe(200);
    expect((await t.http.get('/v1/credentials?status=issued').set(bearer(job))).status).toBe(200);
  });
});
