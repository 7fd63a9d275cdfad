import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyChain } from '../../src/audit/index.js';
import { UNAVAILABLE_RETRY_AFTER_SECONDS } from '../../src/http/errors.js';
import { READINESS_CACHE_MS } from '../../src/http/routes/health.js';
import { BROKER_ISSUER, bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { allEvents } from '../helpers/records.js';

const body = { task_id: 'build-42', scopes: ['artifacts:read'], audience: 'registry.acme.internal' };

let t: TestBroker;
beforeAll(async () => {
  t = await startTestBroker();
});
afterAll(async () => {
  await t.close();
});

const issue = async (payload: Record<string, unknown>, token?: string) =>
  t.http.post('/v1/credentials').set(bearer(token ?? (await t.as.pipeline()))).send(payload);

describe('POST /v1/credentials, low risk', () => {
  it('issues a token that verifies offline against the broker\'s JWKS, served over HTTP', async () => {
    const server: Server = createServer(t.broker.app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const response = await issue({ ...body, ttl_seconds: 120 });
      expect(response.status).toBe(201);
      expect(response.headers['cache-control']).toBe('no-store');
      expect(response.headers.location).toBe(`/v1/credentials/${response.body.request_id}`);
      expect(response.body).toEqual({
        request_id: expect.any(String),
        status: 'issued',
        access_token: expect.any(String),
        token_type: 'Bearer',
        expires_in: 120,
        expires_at: new Date((Math.floor(t.clock() / 1000) + 120) * 1000).toISOString(),
        scopes: ['artifacts:read'],
        audience: 'registry.acme.internal',
        break_glass: false,
      });

      const { port } = server.address() as AddressInfo;
      const jwks = createRemoteJWKSet(new URL(`http://127.0.0.1:${port}/.well-known/jwks.json`));
      const { payload, protectedHeader } = await jwtVerify(response.body.access_token, jwks, {
        issuer: BROKER_ISSUER,
        audience: 'registry.acme.internal',
        typ: 'at+jwt',
        currentDate: new Date(t.clock()),
      });
      expect(protectedHeader).toEqual({ alg: 'ES256', typ: 'at+jwt', kid: expect.any(String) });
      const iat = Math.floor(t.clock() / 1000);
      expect(payload).toEqual({
        iss: BROKER_ISSUER,
        sub: 'repo:acme/app:ref:refs/heads/main',
        aud: 'registry.acme.internal',
        iat,
        nbf: iat - 30, // clockSkew: a resource server lagging a little still accepts it
        exp: iat + 120,
        jti: expect.any(String),
        client_id: 'ci',
        idp: 'ci',
        scope: 'artifacts:read',
        task_id: 'build-42',
        request_id: response.body.request_id,
      });
      expect(payload).not.toHaveProperty('approvers');
      expect(payload).not.toHaveProperty('break_glass');
    } finally {
      server.close();
    }
  });

  it('records the issuance (jti and SHA-256, never the token) with a token.issued event on the chain', async () => {
    const response = await issue(body);
    const token = response.body.access_token as string;
    const { jti } = JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString()) as { jti: string };
    const [row] = await t.db.sql('SELECT * FROM issuances WHERE jti = ?', [jti]);
    expect(row).toMatchObject({
      request_id: response.body.request_id,
      token_sha256: createHash('sha256').update(token).digest('hex'),
      kid: decodeProtectedHeader(token).kid,
    });
    const events = (await allEvents(t)).filter((e) => e.requestId === response.body.request_id);
    expect(events.map((e) => e.type)).toEqual(['request.created', 'token.issued']);
    expect(events[1]?.data).toMatchObject({ jti, scopes: ['artifacts:read'], audience: 'registry.acme.internal' });
    expect(verifyChain((await allEvents(t)))).toMatchObject({ ok: true });
  });

  it('never writes a token to the log or the database file', async () => {
    const identity = await t.as.pipeline();
    const response = await issue(body, identity);
    const exchanged = await t.http
      .post('/oauth2/token')
      .type('form')
      .send({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
        subject_token: identity,
        subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
        scope: 'artifacts:read',
        audience: 'registry.acme.internal',
        task_id: 'build-43',
      });
    expect(exchanged.status).toBe(200);
    await t.http.post('/v1/credentials').set(bearer(response.body.access_token)).send(body); // a token misused as identity is logged as refused
    // Every other way a token leaves: break-glass, collection after approval, a child token.
    const broken = await t.http.post('/v1/credentials').set(bearer(await t.as.person('olga', ['on-call']))).send({ ...body, scopes: ['logs:read'], break_glass: true, justification: 'production is down, need the logs now' });
    expect(broken.status).toBe(201);
    const ml = await t.as.ml();
    const pending = (await t.http.post('/v1/credentials').set(bearer(ml)).send({ ...body, scopes: ['model:deploy'] })).body;
    await t.http.post(`/v1/credentials/${pending.request_id}/approvals`).set(bearer(await t.as.person('alice', ['approvers', 'ml-release']))).send({ decision: 'approve', reason: 'ok', digest: pending.digest });
    const collected = await t.http.post(`/v1/credentials/${pending.request_id}/token`).set(bearer(ml));
    expect(collected.status).toBe(201);
    const child = await t.http.post('/oauth2/token').type('form').send({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: exchanged.body.access_token, subject_token_type: 'urn:ietf:params:oauth:token-type:access_token' });
    expect(child.status).toBe(200);
    const secrets = [identity, response.body.access_token as string, exchanged.body.access_token as string, broken.body.access_token as string, collected.body.access_token as string, child.body.access_token as string];
    const logs = t.logs.join('\n');
    const database = await t.db.contents();
    for (const secret of secrets) {
      // Signatures are what make a token a token; no part of one may be written down.
      const signature = secret.split('.')[2] as string;
      expect(logs).not.toContain(signature);
      expect(database).not.toContain(signature);
    }
    expect(logs).toContain('request completed'); // the log was written, and is not empty
    // Ended, so that what the later tests ask is judged without these grants live.
    for (const [id, who] of [[pending.request_id, ml], [broken.body.request_id, await t.as.person('olga', ['on-call'])], [child.body.request_id, identity]] as const) {
      expect((await t.http.post(`/v1/credentials/${id}/complete`).set(bearer(who))).status, id).toBe(200);
    }
  });

  it('clamps ttl_seconds to the smallest maximum and shows the effective lifetime', async () => {
    expect((await issue({ ...body, ttl_seconds: 99_999 })).body.expires_in).toBe(900); // scope maxTtl 15m
    expect((await issue({ ...body, ttl_seconds: 10 ** 12 })).body.expires_in).toBe(900); // however large
    expect((await issue({ ...body, ttl_seconds: 60 })).body.expires_in).toBe(60);
    expect((await issue(body)).body.expires_in).toBe(900); // omitted means the maximum
    // The ml-main policy caps at 10m, below artifacts:read's 15m.
    const ml = await issue({ ...body, scopes: ['artifacts:read', 'model:train'], ttl_seconds: 3600 }, await t.as.ml());
    expect(ml.status).toBe(201);
    expect(ml.body.expires_in).toBe(600);
    // artifacts:read alone is also granted by the uncapped pipelines policy: policies add up.
    expect((await issue({ ...body, ttl_seconds: 3600 }, await t.as.ml())).body.expires_in).toBe(900);
  });
});

describe('policy: default deny', () => {
  it('refuses a scope no policy grants, naming exactly the refused scopes', async () => {
    const response = await issue({ ...body, scopes: ['artifacts:read', 'model:train', 'nope:never'] });
    expect(response.status).toBe(403);
    expect(response.body).toMatchObject({
      type: expect.stringMatching(/policy_denied$/),
      status: 403,
      scopes: ['model:train', 'nope:never'],
    });
    expect(response.body.detail).toContain('model:train, nope:never');
  });

  it('matches claims exactly and subjects by glob', async () => {
    const feature = await t.as.ml({ ref: 'refs/heads/feature' });
    expect((await issue({ ...body, scopes: ['model:train'] }, feature)).status).toBe(403);
    expect((await issue({ ...body, scopes: ['model:train'] }, await t.as.ml())).status).toBe(201);
    const outsider = await t.as.pipeline({}, 'repo:other/app:ref:refs/heads/main');
    expect((await issue(body, outsider)).status).toBe(403);
    // `repo:acme/*` is anchored: a subject that merely contains it does not match.
    const sneaky = await t.as.pipeline({}, 'x-repo:acme/app');
    expect((await issue(body, sneaky)).status).toBe(403);
  });

  it('refuses an audience the granting policy does not allow', async () => {
    const response = await issue({ ...body, scopes: ['model:train'], audience: 'prod.acme.internal' }, await t.as.ml());
    expect(response.status).toBe(403);
    expect(response.body).toMatchObject({ type: expect.stringMatching(/policy_denied$/), audience: 'prod.acme.internal' });
  });

  it('leaves an audit event for every refusal', async () => {
    await issue({ ...body, scopes: ['nope:never'] });
    const refusal = (await allEvents(t)).filter((e) => e.type === 'request.refused').at(-1);
    expect(refusal).toMatchObject({
      actor: { iss: 'https://ci.test', sub: 'repo:acme/app:ref:refs/heads/main' },
      data: { problem: 'policy_denied', scopes: ['nope:never'] },
    });
  });
});

describe('bad input', () => {
  const expectProblem = (response: { status: number; body: Record<string, unknown>; headers: Record<string, string>; text: string }, status: number) => {
    expect(response.status).toBe(status);
    expect(response.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(response.body.type).toMatch(/invalid_request$/);
    expect(response.text).not.toMatch(/\bat .*\.(ts|js):\d+/); // never a stack trace
  };

  it.each([
    ['an unknown field', { ...body, scope: 'x' }, '#/scope'],
    ['a missing task_id', { scopes: body.scopes, audience: body.audience }, '#/task_id'],
    ['a task_id over 256 characters', { ...body, task_id: 'x'.repeat(257) }, '#/task_id'],
    ['no scopes', { ...body, scopes: [] }, '#/scopes'],
    ['33 scopes', { ...body, scopes: Array.from({ length: 33 }, (_, i) => `s${i}`) }, '#/scopes'],
    ['a repeated scope', { ...body, scopes: ['artifacts:read', 'artifacts:read'] }, '#/scopes'],
    ['a malformed scope', { ...body, scopes: ['Artifacts Read'] }, '#/scopes/0'],
    ['a justification over 2000 characters', { ...body, justification: 'x'.repeat(2001) }, '#/justification'],
    ['a negative ttl', { ...body, ttl_seconds: -5 }, '#/ttl_seconds'],
    ['a string break_glass', { ...body, break_glass: 'yes' }, '#/break_glass'],
    ['control characters in task_id', { ...body, task_id: 'a\nb' }, '#/task_id'],
    ['a terminal escape in the justification', { ...body, justification: 'routine\u001b[2K\rapproved by the CISO' }, '#/justification'],
    ['a C1 control in the justification', { ...body, justification: 'routine\u009b2K' }, '#/justification'],
    ['a bidirectional override in the audience', { ...body, audience: 'registry\u202eliame' }, '#/audience'],
  ])('answers 400 naming the field for %s', async (_name, payload, pointer) => {
    const response = await issue(payload);
    expectProblem(response, 400);
    expect((response.body.errors as { pointer: string }[]).map((e) => e.pointer)).toContain(pointer);
  });

  it('keeps a justification written over several lines, with tabs', async () => {
    const justification = 'nightly build\n\tcache warm-up for café and 日本';
    const response = await issue({ ...body, justification });
    expect(response.status).toBe(201);
    const view = await t.http.get(`/v1/credentials/${response.body.request_id}`).set(bearer(await t.as.pipeline()));
    expect(view.body.justification).toBe(justification);
  });

  it('answers 400 naming only the real fault for an empty audience', async () => {
    const response = await issue({ ...body, audience: '' });
    expectProblem(response, 400);
    expect(response.body.errors).toEqual([{ pointer: '#/audience', detail: expect.stringMatching(/too small/i) }]);
  });

  it('answers 400 for a body that is not JSON, and 413 for one over 64 KiB', async () => {
    const token = await t.as.pipeline();
    const broken = await t.http.post('/v1/credentials').set(bearer(token)).set('content-type', 'application/json').send('{"task_id":');
    expectProblem(broken, 400);
    const form = await t.http.post('/v1/credentials').set(bearer(token)).type('form').send({ task_id: 'build-1' });
    expectProblem(form, 400);
    expect(form.body.detail).toMatch(/must be JSON/);
    const huge = await issue({ ...body, justification: 'x'.repeat(70 * 1024) });
    expectProblem(huge, 413);
  });

  it('answers 404 problem+json for an unknown endpoint', async () => {
    const response = await t.http.get('/v1/nothing-here').set(bearer(await t.as.pipeline()));
    expect(response.status).toBe(404);
    expect(response.body.type).toMatch(/not_found$/);
  });
});

describe('fail closed', () => {
  it('answers 503 and hands out no token when the store cannot write', async () => {
    const before = (await allEvents(t)).length;
    const requests = async () => Number((await t.db.sql<{ n: number }>('SELECT count(*) AS n FROM requests'))[0]?.n);
    const requestsBefore = await requests();
    const undo = await t.db.failWrites('issuances', 'INSERT');
    try {
      const response = await issue(body);
      expect(response.status).toBe(503);
      expect(response.body.type).toMatch(/unavailable$/);
      // RFC 9110 section 10.2.3: when to ask again, in seconds.
      expect(response.headers['retry-after']).toBe(String(UNAVAILABLE_RETRY_AFTER_SECONDS));
      expect(response.text).not.toContain('eyJ'); // no JWT anywhere in the answer
      expect((await allEvents(t)).length).toBe(before); // nothing partial: no request row, no event
      expect(await requests()).toBe(requestsBefore);

      const ready = await t.http.get('/readyz');
      expect(ready.status).toBe(200); // the probe row still writes; it is the issuance that cannot
    } finally {
      await undo();
    }
    expect((await issue(body)).status).toBe(201);
  });

  it('reports not ready when the store refuses writes', async () => {
    t.clock.advance(READINESS_CACHE_MS); // not the verdict of an earlier probe
    const undo = await t.db.failWrites('readiness_probe', 'UPDATE');
    try {
      const response = await t.http.get('/readyz');
      expect(response.status).toBe(503);
      expect(response.body.type).toMatch(/unavailable$/);
      // A load balancer may take it as when to probe again.
      expect(response.headers['retry-after']).toBe(String(UNAVAILABLE_RETRY_AFTER_SECONDS));
    } finally {
      await undo();
    }
    t.clock.advance(READINESS_CACHE_MS); // the verdict is reused that long
    expect((await t.http.get('/readyz')).status).toBe(200);
  });
});

describe('public endpoints', () => {
  it('serves both discovery documents', async () => {
    for (const path of ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']) {
      const response = await t.http.get(path);
      expect(response.status).toBe(200);
      expect(response.body).toMatchObject({
        issuer: BROKER_ISSUER,
        jwks_uri: `${BROKER_ISSUER}/.well-known/jwks.json`,
        token_endpoint: `${BROKER_ISSUER}/oauth2/token`,
        introspection_endpoint: `${BROKER_ISSUER}/oauth2/introspect`,
        revocation_endpoint: `${BROKER_ISSUER}/oauth2/revoke`,
        grant_types_supported: ['urn:ietf:params:oauth:grant-type:token-exchange'],
      });
    }
  });

  it('serves public keys only in the JWKS', async () => {
    const { body: jwks } = await t.http.get('/.well-known/jwks.json');
    expect(jwks.keys.length).toBeGreaterThan(0);
    for (const key of jwks.keys) {
      expect(key).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig', kid: expect.any(String) });
      expect(key).not.toHaveProperty('d');
    }
  });

  it('answers /healthz and Prometheus /metrics', async () => {
    expect((await t.http.get('/healthz')).body).toEqual({ status: 'ok' });
    const metrics = await t.http.get('/metrics');
    expect(metrics.headers['content-type']).toMatch(/^text\/plain/);
    expect(metrics.text).toMatch(/broker_http_requests_total\{method="POST",route="\/v1\/credentials",status="201"\} \d+/);
    // Refusals are counted coarsely: the exact failed check would help a forger.
    expect(metrics.text).toMatch(/broker_identity_rejections_total\{reason="invalid"\} [1-9]/);
    expect(metrics.text).not.toMatch(/broker_identity_rejections_total\{reason="(?!invalid|missing|jwks_unavailable)/);
    expect(metrics.text).toContain('broker_break_glass_reviews_pending{overdue="false"}');
  });
});
