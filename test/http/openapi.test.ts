import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import type { Express } from 'express';
import type { Response } from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OPERATIONS, findOperation } from '../../src/http/openapi/index.js';
import { exportJWK, generateKeyPair } from 'jose';
import { signDpopProof } from '../../src/dpop/index.js';
import { BROKER_ISSUER, bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';

type Document = { paths: Record<string, Record<string, any>>; components: Record<string, any>; openapi: string; servers: { url: string }[] };

/** Every (method, path template) the express app serves, found by walking its routers. */
function servedRoutes(app: Express): string[] {
  const found: string[] = [];
  const walk = (stack: any[], prefix: string) => {
    for (const layer of stack) {
      const paths: string[] = Array.isArray(layer.rawPath) ? layer.rawPath : [layer.rawPath ?? ''];
      for (const path of paths) {
        if (layer.route) {
          for (const method of Object.keys(layer.route.methods)) {
            found.push(`${method.toUpperCase()} ${`${prefix}${path}`.replace(/:([a-z_]+)/gi, '{$1}').replace(/(.)\/$/, '$1')}`);
          }
        } else if (layer.handle?.stack) {
          walk(layer.handle.stack, path === '/' ? prefix : `${prefix}${path}`);
        }
      }
    }
  };
  walk((app as any).router.stack, '');
  return [...new Set(found)].sort();
}

/** Every object in the document holding an `example`, with where it is. */
function examples(node: unknown, at = '#'): { at: string; holder: Record<string, any> }[] {
  if (typeof node !== 'object' || node === null) return [];
  const here = !Array.isArray(node) && 'example' in node ? [{ at, holder: node as Record<string, any> }] : [];
  return [
    ...here,
    ...Object.entries(node).flatMap(([key, value]) => (key === 'example' ? [] : examples(value, `${at}/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`))),
  ];
}

describe('GET /openapi.json', () => {
  let t: TestBroker;
  let doc: Document;
  let ajv: Ajv2020;
  beforeAll(async () => {
    t = await startTestBroker();
    const response = await t.http.get('/openapi.json');
    expect(response.status).toBe(200);
    doc = response.body;
    ajv = new Ajv2020({ strict: false, allErrors: true });
    addFormats.default(ajv);
    ajv.addSchema(doc as object, 'openapi.json');
  });
  afterAll(async () => t?.close());

  /** Validates `value` against the schema at `pointer` in the served document. */
  const validate = (pointer: string, value: unknown) => {
    const check = ajv.getSchema(`openapi.json${pointer}`);
    if (!check) throw new Error(`no schema at ${pointer}`);
    return check(value) ? [] : (check.errors ?? []).map((error) => `${error.instancePath} ${error.message}`);
  };

  it('is a valid OpenAPI 3.1 document naming this broker', async () => {
    const result = await new Validator().validate(structuredClone(doc) as never);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.servers).toEqual([{ url: t.config.issuer }]);
  });

  it('holds every route the app serves, and serves every operation it holds', () => {
    const documented = Object.entries(doc.paths)
      .flatMap(([path, item]) => Object.keys(item).map((method) => `${method.toUpperCase()} ${path}`))
      .sort();
    const served = servedRoutes(t.broker.app);
    expect(served.length).toBeGreaterThan(20);
    expect(served).toEqual(documented);
  });

  it('documents the request schemas the routes validate with', () => {
    const body = doc.paths['/v1/credentials']?.post.requestBody.content['application/json'].schema;
    expect(body).toMatchObject({ additionalProperties: false, required: ['task_id', 'scopes', 'audience'] });
    expect(body.properties.task_id).toMatchObject({ maxLength: 256 });
    expect(body.properties.justification).toMatchObject({ maxLength: 2000 });
    expect(body.properties.scopes).toMatchObject({ minItems: 1, maxItems: 32 });
    const decision = doc.paths['/v1/credentials/{id}/approvals']?.post;
    expect(decision.security).toEqual([{ identityToken: [] }]);
    expect(decision.requestBody.content['application/json'].schema.properties.digest.pattern).toBe('^[0-9a-f]{64}$');
    expect(doc.paths['/oauth2/token']?.post.requestBody.content).toHaveProperty('application/x-www-form-urlencoded');
    expect(doc.paths['/oauth2/token']?.post.security).toEqual([]);
  });

  it('requires every field of the RFC 8414 metadata the broker serves (CONTRACT section 4 lists them)', async () => {
    const served = (await t.http.get('/.well-known/oauth-authorization-server')).body as Record<string, unknown>;
    for (const path of ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']) {
      const schema = doc.paths[path]?.get.responses['200'].content['application/json'].schema;
      const resolved = schema.$ref ? doc.components.schemas[schema.$ref.split('/').pop()] : schema;
      expect([...resolved.required].sort(), path).toEqual(Object.keys(served).sort());
    }
  });

  it('documents 503 for every operation that reads the store or the keys in it, which a PostgreSQL outage puts out of reach', () => {
    const storeless = new Set(['/openapi.json', '/healthz']);
    const operations = Object.entries(doc.paths)
      .filter(([path]) => !storeless.has(path) && !path.startsWith('/console'))
      .flatMap(([path, item]) => Object.entries(item).map(([method, operation]) => [`${method.toUpperCase()} ${path}`, operation] as const));
    expect(operations.length).toBeGreaterThan(20);
    for (const [name, operation] of operations) {
      const documented = operation.responses['503']?.content;
      expect(documented, name).toBeDefined();
      expect(Object.keys(documented), name).toEqual([name.includes(' /oauth2/') ? 'application/json' : 'application/problem+json']);
    }
  });

  it('says that every 503 carries Retry-After, as every 429 does', () => {
    const answers = Object.entries(doc.paths).flatMap(([path, item]) =>
      Object.entries(item).flatMap(([method, operation]) =>
        ['429', '503'].filter((status) => operation.responses[status]).map((status) => [`${method.toUpperCase()} ${path} ${status}`, operation.responses[status]] as const),
      ),
    );
    expect(answers.filter(([name]) => name.endsWith(' 503')).length).toBeGreaterThan(20);
    for (const [name, response] of answers) expect(response.description, name).toMatch(/`Retry-After`/);
  });

  it('has examples that validate against the document\'s own schemas', () => {
    const found = examples(doc.paths);
    expect(found.length).toBeGreaterThan(25);
    for (const { at, holder } of found) {
      const pointer = `${at.replace(/^#/, '#/paths')}${'schema' in holder ? '/schema' : ''}`;
      const problems = 'schema' in holder ? validate(pointer, holder.example) : validate(pointer.replace(/^#/, '#'), holder.example);
      expect(problems, pointer).toEqual([]);
    }
  });

  it('has examples that the zod schemas behind it accept', () => {
    let checked = 0;
    for (const operation of OPERATIONS) {
      const bodies = [...(operation.body ? [operation.body] : []), ...Object.values(operation.responses).flatMap((response) => response.content ?? [])];
      for (const body of bodies.filter((candidate) => candidate.example !== undefined)) {
        const parsed = body.schema.safeParse(body.example);
        expect(parsed.success, `${operation.operationId} ${body.contentType}: ${parsed.error?.message}`).toBe(true);
        checked += 1;
      }
    }
    expect(checked).toBeGreaterThan(25);
  });

  it('finds the operation of a request by method and path, for the metrics label', () => {
    expect(findOperation('GET', '/v1/credentials/01938d5e-7c1a')?.path).toBe('/v1/credentials/{id}');
    expect(findOperation('POST', '/v1/credentials/x/approvals')?.path).toBe('/v1/credentials/{id}/approvals');
    expect(findOperation('POST', '/v1/credentials/')?.path).toBe('/v1/credentials');
    expect(findOperation('HEAD', '/healthz')?.path).toBe('/healthz');
    expect(findOperation('DELETE', '/v1/credentials/x')).toBeUndefined();
    expect(findOperation('GET', '/v1/credentials/x/y/z')).toBeUndefined();
  });

  describe('what the broker answers', () => {
    /** Checks a real answer against the document's schema for its operation, status and media type. */
    const conforms = (method: string, path: string, response: Response) => {
      const operation = findOperation(method, path.split('?')[0] as string);
      expect(operation, `${method} ${path}`).toBeDefined();
      const documented = doc.paths[operation?.path as string]?.[method.toLowerCase()]?.responses[String(response.status)];
      expect(documented, `${method} ${operation?.path} ${response.status} is not documented`).toBeDefined();
      const type = (response.headers['content-type'] ?? '').split(';')[0] as string;
      if (!documented.content) return;
      expect(Object.keys(documented.content), `${method} ${operation?.path} ${response.status}`).toContain(type);
      if (type === 'application/json' || type.endsWith('+json')) {
        const pointer = `#/paths/${(operation?.path as string).replace(/~/g, '~0').replace(/\//g, '~1')}/${method.toLowerCase()}/responses/${response.status}/content/${type.replace(/\//g, '~1')}/schema`;
        expect(validate(pointer, response.body), `${method} ${path} ${response.status}`).toEqual([]);
      }
    };
    const call = async (method: 'get' | 'post', path: string, token?: string, body?: Record<string, unknown>, form = false) => {
      let request = t.http[method](path);
      if (token) request = request.set(bearer(token));
      if (form) request = request.type('form');
      const response = await (body ? request.send(body) : request);
      conforms(method.toUpperCase(), path, response);
      return response;
    };

    it('matches the document, endpoint by endpoint, success and refusal', async () => {
      const auditor = await t.as.person('ivy', ['auditors']);
      const approver = await t.as.person('alice', ['approvers', 'ml-release']);
      const ml = await t.as.ml();
      const pipeline = await t.as.pipeline();
      const introspector = await t.as.pipeline({}, 'resource-server:registry');

      for (const path of ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration', '/.well-known/jwks.json', '/healthz', '/readyz', '/metrics', '/openapi.json']) {
        expect((await call('get', path)).status).toBe(200);
      }
      const ask = (token: string, body: Record<string, unknown>) => call('post', '/v1/credentials', token, { task_id: 'doc', audience: 'registry.acme.internal', ...body });
      const issued = await ask(pipeline, { scopes: ['artifacts:read'] });
      expect(issued.status).toBe(201);
      expect((await ask(pipeline, { scopes: [] })).status).toBe(400);
      expect((await call('post', '/v1/credentials', undefined, { task_id: 'x' })).status).toBe(401);
      expect((await ask(pipeline, { scopes: ['db:admin'] })).status).toBe(403);
      const pending = await ask(ml, { scopes: ['model:deploy'] });
      expect(pending.status).toBe(202);
      const id = pending.body.request_id as string;

      expect((await call('get', '/v1/credentials', ml)).status).toBe(200);
      expect((await call('get', `/v1/credentials/${id}`, ml)).status).toBe(200);
      expect((await call('get', '/v1/credentials/nope', ml)).status).toBe(404);
      expect((await call('get', '/v1/approvals', approver)).status).toBe(200);
      expect((await call('post', `/v1/credentials/${id}/token`, ml)).status).toBe(409);
      expect((await call('post', `/v1/credentials/${id}/approvals`, approver, { decision: 'approve', reason: 'ok', digest: '0'.repeat(64) })).status).toBe(409);
      expect((await call('post', `/v1/credentials/${id}/approvals`, approver, { decision: 'approve', reason: 'ok', digest: pending.body.digest })).status).toBe(200);
      const collected = await call('post', `/v1/credentials/${id}/token`, ml);
      expect(collected.status).toBe(201);
      expect((await call('post', `/v1/credentials/${id}/complete`, ml)).status).toBe(200);
      expect((await call('post', `/v1/credentials/${issued.body.request_id}/revoke`, pipeline, { reason: 'done early' })).status).toBe(200);

      const onCall = await t.as.person('olga', ['on-call']);
      const glass = await ask(onCall, { scopes: ['logs:read'], break_glass: true, justification: 'registry down since 03:10, rolling back' });
      expect(glass.status).toBe(201);
      expect((await call('get', '/v1/break-glass', approver)).status).toBe(200);
      expect((await call('get', '/v1/break-glass', pipeline)).status).toBe(403);
      expect((await call('post', `/v1/credentials/${glass.body.request_id}/review`, approver, { outcome: 'justified', notes: 'incident 99' })).status).toBe(200);

      expect((await call('get', '/v1/revocations', introspector)).status).toBe(200);
      expect((await call('get', '/v1/audit/issuances', auditor)).status).toBe(200);
      expect((await call('get', '/v1/audit/issuances?format=csv', auditor)).status).toBe(200);
      expect((await call('get', '/v1/audit/events', auditor)).status).toBe(200);
      expect((await call('get', '/v1/audit/events?format=ndjson', auditor)).status).toBe(200);
      expect((await call('get', '/v1/audit/verify', auditor)).status).toBe(200);
      expect((await call('get', '/v1/audit/verify', pipeline)).status).toBe(403);

      const exchange = (extra: Record<string, unknown>) =>
        call('post', '/oauth2/token', undefined, {
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
          audience: 'registry.acme.internal',
          task_id: 'doc-exchange',
          ...extra,
        }, true);
      const exchanged = await exchange({ subject_token: pipeline, scope: 'artifacts:read' });
      expect(exchanged.status).toBe(200);
      expect((await exchange({ subject_token: await t.as.ml(), scope: 'model:deploy', task_id: 'doc-2' })).status).toBe(400);
      expect((await call('post', '/oauth2/introspect', introspector, { token: exchanged.body.access_token }, true)).status).toBe(200);
      expect((await call('post', '/oauth2/introspect', introspector, {}, true)).status).toBe(400);
      expect((await call('post', '/oauth2/revoke', pipeline, { token: exchanged.body.access_token }, true)).status).toBe(200);
      expect((await call('post', '/oauth2/revoke', undefined, { token: 'x' }, true)).status).toBe(401);
    });

    it('matches the document for DPoP-bound tokens, bodies too large, unknown query fields and foreign tokens', async () => {
      const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
      const key = { alg: 'ES256' as const, privateKey, publicJwk: await exportJWK(publicKey) };
      const proof = (path: string) => signDpopProof(key, { method: 'POST', url: `${BROKER_ISSUER}${path}`, now: t.clock() });
      const pipeline = await t.as.pipeline();
      const introspector = await t.as.pipeline({}, 'resource-server:registry');
      const checked = async (method: 'GET' | 'POST', path: string, response: Response) => {
        conforms(method, path, response);
        return response;
      };

      const bound = await checked('POST', '/v1/credentials', await t.http.post('/v1/credentials').set(bearer(pipeline)).set('DPoP', await proof('/v1/credentials')).send({ task_id: 'dpop', scopes: ['artifacts:read'], audience: 'registry.acme.internal' }));
      expect(bound.body.token_type).toBe('DPoP');
      const exchanged = await checked('POST', '/oauth2/token', await t.http.post('/oauth2/token').type('form').set('DPoP', await proof('/oauth2/token')).send({
        grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: pipeline, subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
        audience: 'registry.acme.internal', task_id: 'dpop-2', scope: 'artifacts:read',
      }));
      expect(exchanged.body.token_type).toBe('DPoP');
      const introspected = await call('post', '/oauth2/introspect', introspector, { token: exchanged.body.access_token }, true);
      expect(introspected.body.token_type).toBe('DPoP');

      expect((await call('get', `/v1/credentials/${bound.body.request_id}?x=1`, pipeline)).status).toBe(400);
      expect((await call('get', '/v1/audit/checkpoint?x=1', await t.as.person('ivy', ['auditors']))).status).toBe(400);
      const large = 'x'.repeat(70 * 1024);
      expect((await call('post', `/v1/credentials/${bound.body.request_id}/revoke`, pipeline, { reason: large })).status).toBe(413);
      expect((await call('post', '/oauth2/introspect', introspector, { token: large }, true)).status).toBe(413);
      expect((await call('post', '/oauth2/revoke', await t.as.person('mallory', ['on-call']), { token: exchanged.body.access_token }, true)).status).toBe(400);
    });
  });
});
