import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { OPERATIONS } from '../../src/http/openapi/index.js';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';

/**
 * Bad input gets a clear 4xx, never a 5xx: every operation of the API document, with hostile
 * ids, queries, bodies and headers, as callers of every kind, on both engines. (It found that
 * PostgreSQL, which stores no NUL in text, answered 503 where SQLite answered 201 or 404.)
 */

const NUL = '\u0000';
const LONE = '\uD800';

const ids = ['nope', '%00', 'a%00b', '%ed%a0%80', '%ff', 'a'.repeat(300), '..%2f..', '__proto__'];
const queries = [
  '?limit=-1', '?limit=1e309', '?limit=1&limit=2', '?cursor=%ff%fe', `?cursor=${'A'.repeat(5000)}`, '?status[]=x', '?status=a&status=b',
  '?since=99999-01-01T00:00:00Z', '?format=csv&format=ndjson', '?type[$ne]=x', '?__proto__[x]=1', '?subject=%00', '?request_id=a%00b',
  '?type=%ed%a0%80', `?scope=${'*'.repeat(3000)}`, '?from_seq=1e400',
];
/** Cursors no listing gave out, of keys the store cannot compare: NUL, fractions, out of range. */
const craftedCursors = [[1, 'a\u0000b'], [1.5, 'x'], [1e308, 'x'], [-1e308, 'x'], ['a\u0000'], [1e308], [1, LONE]].map(
  (key) => `?cursor=${Buffer.from(JSON.stringify(key)).toString('base64url')}`,
);
queries.push(...craftedCursors);
const nested = (depth: number) => `${'['.repeat(depth)}${']'.repeat(depth)}`;
const bodies: unknown[] = [
  'not json', '[]', 'null', '"x"', { task_id: null }, { scopes: [{}] }, { ttl_seconds: 1e308 }, { __proto__: { admin: true } },
  { constructor: { prototype: { x: 1 } } }, { decision: ['approve'] }, { reason: `a${NUL}` }, { notes: LONE }, `{"a":${nested(30000)}}`,
];
/** A valid request with one field made hostile, so that checks past the schema run too. */
const valid = { task_id: 'x', scopes: ['artifacts:read'], audience: 'registry.acme.internal', ttl_seconds: 60 };
const hostileValues: unknown[] = [null, '', NUL, `a${NUL}`, LONE, 1e308, [], {}, [[[]]], { $gt: '' }, '__proto__', '**', 'x'.repeat(3000)];
const hostileFields = ['task_id', 'scopes', 'audience', 'ttl_seconds', 'justification', 'break_glass', 'authorization_details'];
const oneFieldBad = hostileFields.flatMap((field) =>
  hostileValues.flatMap((value) => [{ ...valid, [field]: value }, { ...valid, scopes: [value] }, { ...valid, authorization_details: [{ type: 'model', identifier: value }] }]),
);

describe('hostile input on every operation', () => {
  let t: TestBroker;
  let callers: [string, string | undefined][];
  let pendingId: string;
  let pipeline: string;
  beforeAll(async () => {
    t = await startTestBroker();
    const ml = await t.as.ml();
    callers = [
      ['nobody', undefined],
      ['an admin', await t.as.person('ada', ['admins', 'auditors', 'approvers', 'on-call', 'ml-release'])],
      ['ml', ml],
    ];
    pipeline = await t.as.pipeline();
    pendingId = (await t.http.post('/v1/credentials').set(bearer(ml)).send({ ...valid, scopes: ['model:deploy'] })).body.request_id;
  });
  afterAll(async () => t?.close());

  const fiveHundreds: string[] = [];
  beforeEach(() => {
    fiveHundreds.length = 0;
  });
  const send = async (method: 'get' | 'post', path: string, token: string | undefined, body?: unknown, headers: Record<string, string> = {}) => {
    let request = t.http[method](path);
    if (token) request = request.set(bearer(token));
    for (const [name, value] of Object.entries(headers)) request = request.set(name, value);
    if (body !== undefined) {
      const asText = (value: unknown) => (typeof value === 'string' ? value : JSON.stringify(value));
      request = path.startsWith('/oauth2')
        ? request.type('form').send(typeof body === 'string' ? body : new URLSearchParams(Object.entries(body as object).map(([k, v]): [string, string] => [k, asText(v)])).toString())
        : request.set('content-type', 'application/json').send(asText(body));
    }
    const response = await request;
    if (response.status >= 500) fiveHundreds.push(`${response.status} ${method.toUpperCase()} ${path.slice(0, 100)} ${asShort(body)} ${asShort(headers)}: ${response.text.slice(0, 160)}`);
    else expect(response.status, `${method} ${path}`).toBeGreaterThanOrEqual(200);
    return response;
  };
  const asShort = (value: unknown) => (value === undefined ? '' : JSON.stringify(value).slice(0, 80));

  it('answers hostile ids, queries and bodies with a 4xx, never a 5xx, whoever asks', async () => {
    for (const operation of OPERATIONS) {
      // The console's pages are static: their queries mean nothing to them.
      const hostileQueries = operation.path.startsWith('/console/') ? queries.slice(0, 2) : queries;
      const path = operation.path.replace('{id}', pendingId);
      for (const [who, token] of callers) {
        // Who cannot be identified is refused before the query or body is read: a sample is enough.
        const sample = <T>(all: T[]) => (who === 'nobody' ? all.slice(0, 2) : all);
        await Promise.all([
          ...(operation.method === 'get' ? sample(hostileQueries).map((query) => send('get', `${path}${query}`, token)) : sample(bodies).map((body) => send('post', path, token, body))),
          // An id is read before any body: each hostile one once, with no body.
          ...(operation.path.includes('{id}') ? ids.map((id) => send(operation.method, operation.path.replace('{id}', id), token)) : []),
        ]);
      }
    }
    await Promise.all(oneFieldBad.map((body) => send('post', '/v1/credentials', pipeline, body)));
    expect(fiveHundreds).toEqual([]);
  }, 60_000);

  it('answers hostile Authorization, DPoP and content headers with a 4xx, never a 5xx', async () => {
    const b64 = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
    const jwt = (header: unknown, payload: unknown, signature = 'c2ln') => `${b64(header)}.${b64(payload)}.${signature}`;
    const claims = { iss: 'https://token.actions.githubusercontent.com', sub: 'x', aud: 'jit-broker', exp: 9999999999, iat: 1 };
    const tokens = [
      '', 'a', 'a.b.c', '...', `${'a'.repeat(9000)}`, jwt({ alg: 'none' }, claims, ''), jwt({ alg: 'HS256' }, claims), jwt({ alg: 'RS256', kid: {} }, claims),
      jwt({ alg: 'RS256', crit: ['b64'], b64: false }, claims), jwt({ alg: 'RS256', jku: 'http://127.0.0.1:1/' }, claims), jwt({ alg: 'RS256' }, { ...claims, iss: { a: 1 } }),
      jwt({ alg: 'RS256' }, { ...claims, aud: [[]], exp: '1' }), jwt({ alg: 'RS256' }, '[]'), jwt({ alg: 'RS256' }, 'null'), jwt('x', claims),
    ];
    const proofs = ['x', 'a.b.c', jwt({ typ: 'dpop+jwt', alg: 'ES256', jwk: { kty: 'EC', crv: 'P-256', x: 'x', y: 'y' } }, { htm: 'POST', htu: 'x', iat: 1, jti: NUL }), jwt({ typ: 'dpop+jwt', alg: 'ES256', jwk: 'x' }, {})];
    const exchange = (subjectToken: string) => ({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: subjectToken,
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      scope: 'artifacts:read',
      audience: 'registry.acme.internal',
    });
    for (const token of tokens) {
      for (const authorization of [`Bearer ${token}`, `bearer ${token}`, `Basic ${token}`, `Bearer ${token} Bearer ${token}`]) {
        await send('post', '/v1/credentials', undefined, valid, { authorization });
        await send('get', '/v1/audit/events', undefined, undefined, { authorization });
        await send('post', '/oauth2/introspect', undefined, { token: 'x' }, { authorization });
      }
      await send('post', '/oauth2/token', undefined, exchange(token));
      await send('post', '/oauth2/token', undefined, { ...exchange(pipeline), actor_token: token, actor_token_type: 'urn:ietf:params:oauth:token-type:jwt' });
    }
    for (const dpop of proofs) {
      await send('post', '/v1/credentials', pipeline, valid, { dpop });
      await send('post', '/oauth2/token', undefined, exchange(pipeline), { dpop });
    }
    for (const type of ['application/json; charset=utf-16', 'application/json; charset=koi8-r', 'text/plain', 'multipart/form-data; boundary=x']) {
      await send('post', '/v1/credentials', pipeline, valid, { 'content-type': type });
    }
    for (const encoding of ['gzip', 'deflate', 'br', 'x-unknown']) {
      await send('post', '/v1/credentials', pipeline, valid, { 'content-encoding': encoding });
      await send('post', '/oauth2/token', undefined, exchange(pipeline), { 'content-encoding': encoding });
    }
    expect(fiveHundreds).toEqual([]);
  });
});
