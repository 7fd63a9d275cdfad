import { createServer } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { bearer, createTestIssuers, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { createTestIssuer, serveJwks, type JwksServer } from '../helpers/issuer.js';

/** Issuers given by `jwksUri`: keys fetched over HTTP, cached, refetched on an unknown kid, failing closed. */

const body = { task_id: 'build-1', scopes: ['artifacts:read'], audience: 'registry.acme.internal' };
const pipelineSub = 'repo:acme/app:ref:refs/heads/main';

let t: TestBroker | undefined;
let server: JwksServer | undefined;
afterEach(async () => {
  await t?.close();
  await server?.close();
  t = undefined;
  server = undefined;
});

function lastRejection(logs: string[]): string | undefined {
  const line = [...logs].reverse().find((l) => l.includes('"rejection"'));
  return line ? (JSON.parse(line) as { rejection: string }).rejection : undefined;
}

async function brokerWithJwksUri(uri: string, jwksTimeout = '300ms') {
  const issuers = await createTestIssuers();
  return startTestBroker({
    issuers,
    configure(config) {
      const ci = (config.identity as { issuers: Record<string, unknown>[] }).issuers[0] as Record<string, unknown>;
      delete ci.jwks;
      ci.jwksUri = uri;
      ci.jwksTimeout = jwksTimeout;
    },
  });
}

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as { port: number };
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

describe('remote JWKS', () => {
  it('verifies tokens against keys fetched over HTTP, and caches them', async () => {
    let keys: unknown = { keys: [] };
    server = await serveJwks(() => keys);
    t = await brokerWithJwksUri(server.url);
    keys = t.issuers.ci.jwks;
    for (let i = 0; i < 3; i += 1) {
      const response = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send(body);
      expect(response.status).toBe(201);
    }
    expect(server.fetches).toBe(1);
  });

  it('refetches on an unknown kid, but not more often than its cooldown', async () => {
    let keys: unknown;
    server = await serveJwks(() => keys);
    t = await brokerWithJwksUri(server.url);
    keys = t.issuers.ci.jwks;
    expect((await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send(body)).status).toBe(201);

    // The issuer rotates: a token under a new kid, published in the JWKS.
    const rotated = await createTestIssuer(t.issuers.ci.iss);
    keys = { keys: [...t.issuers.ci.jwks.keys, rotated.publicJwk] };
    const token = await rotated.token(pipelineSub, { repository: 'acme/app', actor: 'octocat' }, { now: t.clock() });

    // Within the cooldown after the last fetch, an unknown kid does not hammer the issuer.
    const early = await t.http.post('/v1/credentials').set(bearer(token)).send(body);
    expect(early.status).toBe(401);
    expect(lastRejection(t.logs)).toBe('unknown_key');
    expect(server.fetches).toBe(1);

    await new Promise((resolve) => setTimeout(resolve, 5_100));
    const later = await t.http.post('/v1/credentials').set(bearer(token)).send(body);
    expect(later.status).toBe(201);
    expect(server.fetches).toBe(2);
  });

  it('refuses the identity (401, not 500) when the JWKS host is unreachable', async () => {
    t = await brokerWithJwksUri(`http://127.0.0.1:${await freePort()}/jwks`);
    const response = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send(body);
    expect(response.status).toBe(401);
    expect(response.headers['www-authenticate']).toBe('Bearer error="invalid_token"');
    expect(lastRejection(t.logs)).toBe('jwks_unavailable');
  });

  it('refuses the identity when the JWKS answers slower than jwksTimeout', async () => {
    let keys: unknown;
    server = await serveJwks(() => keys, { delayMs: 1_500 });
    t = await brokerWithJwksUri(server.url, '200ms');
    keys = t.issuers.ci.jwks;
    const response = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send(body);
    expect(response.status).toBe(401);
    expect(lastRejection(t.logs)).toBe('jwks_unavailable');
  });

  it('refuses the identity when the JWKS endpoint serves something that is not a JWKS', async () => {
    server = await serveJwks(() => ({ hello: 'world' }));
    t = await brokerWithJwksUri(server.url);
    const response = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send(body);
    expect(response.status).toBe(401);
    expect(lastRejection(t.logs)).toBe('jwks_unavailable');
  });
});
