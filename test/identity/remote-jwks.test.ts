import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { jwtVerify } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import {
  createRemoteKeySource,
  JWKS_CACHE_MAX_AGE_MS,
  JWKS_COOLDOWN_MS,
  JWKS_FAILURE_COOLDOWN_MS,
  JWKS_MAX_BYTES,
  JWKS_MAX_KEYS,
  KeySourceUnavailable,
} from '../../src/identity/index.js';
import { bearer, createTestIssuers, startTestBroker, testClock, type TestBroker } from '../helpers/broker.js';
import { createTestIssuer, serveJwks, type JwksServer, type TestIssuer } from '../helpers/issuer.js';

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

// The test servers answer at once: a timeout far above that keeps a loaded run from refusing an identity.
async function brokerWithJwksUri(uri: string, jwksTimeout = '5s') {
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

    t.clock.advance(5_100);
    const later = await t.http.post('/v1/credentials').set(bearer(token)).send(body);
    expect(later.status).toBe(201);
    expect(server.fetches).toBe(2);
  });

  it('takes a token without kid signed by either key of an issuer mid-rotation, and refuses one neither signed', async () => {
    let keys: unknown;
    server = await serveJwks(() => keys);
    t = await brokerWithJwksUri(server.url);
    const next = await createTestIssuer(t.issuers.ci.iss);
    keys = { keys: [...t.issuers.ci.jwks.keys, next.publicJwk] };
    const claims = { repository: 'acme/app', actor: 'octocat' };
    const ask = async (token: string) => (await t!.http.post('/v1/credentials').set(bearer(token)).send(body)).status;
    // Both keys are ES256: with no kid, each fits the token.
    for (const signer of [t.issuers.ci, next]) {
      expect(await ask(await signer.token(pipelineSub, claims, { now: t.clock(), header: { kid: undefined } }))).toBe(201);
    }
    const stranger = await createTestIssuer(t.issuers.ci.iss);
    expect(await ask(await stranger.token(pipelineSub, claims, { now: t.clock(), header: { kid: undefined } }))).toBe(401);
    expect(lastRejection(t.logs)).toBe('signature');
    // Signed by the second key, its claims judged as any token's: expired is expired.
    expect(await ask(await next.token(pipelineSub, claims, { now: t.clock() - 3_600_000, header: { kid: undefined } }))).toBe(401);
    expect(lastRejection(t.logs)).toBe('expired');
    expect(server.fetches).toBe(1);
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

/** A loopback endpoint that answers as `handle` says, counting requests and the bytes it managed to send. */
async function serve(handle: (res: ServerResponse, req: IncomingMessage) => void | Promise<void>) {
  const state = { fetches: 0, bytesSent: 0 };
  const server = createHttpServer((req, res) => {
    state.fetches += 1;
    res.on('close', () => (state.bytesSent += res.socket?.bytesWritten ?? 0));
    void handle(res, req);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: new URL(`http://127.0.0.1:${port}/jwks`),
    state,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
type Endpoint = Awaited<ReturnType<typeof serve>>;

const json = (res: ServerResponse, value: unknown, status = 200) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(value));
};

const issuer = await createTestIssuer('https://ci.test');

describe('the remote key source', () => {
  let endpoint: Endpoint | undefined;
  afterEach(async () => {
    await endpoint?.close();
    endpoint = undefined;
  });

  const clock = testClock();
  const source = (url: URL, timeoutMs = 1_000) => createRemoteKeySource(url, { timeoutMs, clock });
  const verify = async (keys: ReturnType<typeof source>, signer: TestIssuer = issuer) =>
    jwtVerify(await signer.token('repo:acme/app', {}, { now: clock() }), keys, { currentDate: new Date(clock()) });

  it('shares one fetch among concurrent callers, and keeps the keys until the cache age', async () => {
    endpoint = await serve(async (res) => {
      await new Promise((resolve) => setTimeout(resolve, 100));
      json(res, issuer.jwks);
    });
    const keys = source(endpoint.url);
    await Promise.all(Array.from({ length: 10 }, () => verify(keys)));
    expect(endpoint.state.fetches).toBe(1);
    clock.advance(JWKS_CACHE_MAX_AGE_MS - 1_000);
    await verify(keys);
    expect(endpoint.state.fetches).toBe(1);
    clock.advance(2_000);
    await verify(keys);
    expect(endpoint.state.fetches).toBe(2);
  });

  it('after a failed fetch, refuses at once without fetching until the cooldown is over, then recovers', async () => {
    let healthy = false;
    endpoint = await serve((res) => (healthy ? json(res, issuer.jwks) : json(res, { error: 'down' }, 503)));
    const keys = source(endpoint.url);
    await expect(verify(keys)).rejects.toBeInstanceOf(KeySourceUnavailable);
    expect(endpoint.state.fetches).toBe(1);
    healthy = true;
    // However many identities need the keys meanwhile, the failing endpoint is not asked again.
    for (let i = 0; i < 5; i += 1) await expect(verify(keys)).rejects.toBeInstanceOf(KeySourceUnavailable);
    clock.advance(JWKS_FAILURE_COOLDOWN_MS - 1);
    await expect(verify(keys)).rejects.toBeInstanceOf(KeySourceUnavailable);
    expect(endpoint.state.fetches).toBe(1);
    clock.advance(1);
    await expect(verify(keys)).resolves.toMatchObject({ payload: { sub: 'repo:acme/app' } });
    expect(endpoint.state.fetches).toBe(2);
  });

  it('refetches on an unknown kid at most once per cooldown, however many unknown kids come', async () => {
    let published = issuer.jwks;
    endpoint = await serve((res) => json(res, published));
    const keys = source(endpoint.url);
    await verify(keys);
    const rotated = await createTestIssuer('https://ci.test');
    published = { keys: [...issuer.jwks.keys, rotated.publicJwk] };
    clock.advance(JWKS_COOLDOWN_MS - 1);
    for (let i = 0; i < 5; i += 1) await expect(verify(keys, rotated)).rejects.toMatchObject({ code: 'ERR_JWKS_NO_MATCHING_KEY' });
    expect(endpoint.state.fetches).toBe(1);
    clock.advance(1);
    await verify(keys, rotated);
    expect(endpoint.state.fetches).toBe(2);
    // A made-up kid right after: no fetch.
    const stranger = await createTestIssuer('https://ci.test');
    await expect(verify(keys, stranger)).rejects.toMatchObject({ code: 'ERR_JWKS_NO_MATCHING_KEY' });
    expect(endpoint.state.fetches).toBe(2);
  });

  it('refuses an endless answer without reading it whole, declared or not', async () => {
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    const total = 64 * 1024 * 1024;
    endpoint = await serve(async (res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"keys": [');
      for (let sent = 0; sent < total && !res.destroyed; sent += chunk.length) {
        if (!res.write(chunk)) {
          await new Promise<void>((resolve) => {
            const done = () => {
              res.off('drain', done).off('close', done);
              resolve();
            };
            res.on('drain', done).on('close', done);
          });
        }
      }
      res.end(']}');
    });
    await expect(verify(source(endpoint.url, 10_000))).rejects.toThrow(/larger than 524288 bytes/);
    await new Promise((resolve) => setTimeout(resolve, 50));
    // What the endpoint got out before the broker hung up: the cap and what was in flight, far from all.
    expect(endpoint.state.bytesSent).toBeLessThan(total / 8);

    await endpoint.close();
    endpoint = await serve((res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(total) });
      res.write('{"keys": [');
    });
    await expect(verify(source(endpoint.url, 10_000))).rejects.toThrow(/larger than/);
    expect(JWKS_MAX_BYTES).toBe(512 * 1024);
  });

  it('takes a set of up to the key cap, and refuses one with more keys', async () => {
    const others = await Promise.all(Array.from({ length: JWKS_MAX_KEYS }, () => createTestIssuer('https://ci.test')));
    let published = { keys: [...others.slice(1).map((o) => o.publicJwk), issuer.publicJwk] };
    endpoint = await serve((res) => json(res, published));
    await verify(source(endpoint.url));
    published = { keys: [...others.map((o) => o.publicJwk), issuer.publicJwk] };
    await expect(verify(source(endpoint.url))).rejects.toThrow(/holds 101 keys, more than 100/);
  });

  it('refuses a redirect, an answer that is not JSON or not a JWKS, and one slower than the timeout', async () => {
    const answers: ((res: ServerResponse) => void)[] = [
      (res) => res.writeHead(302, { location: 'http://127.0.0.1:9/elsewhere' }).end(),
      (res) => res.writeHead(200).end('<html>'),
      (res) => json(res, { keys: 'none' }),
      (res) => res.writeHead(200).end(Buffer.from([0x7b, 0xff, 0x7d])),
      (res) => void setTimeout(() => json(res, issuer.jwks), 500),
    ];
    for (const answer of answers) {
      endpoint = await serve(answer);
      await expect(verify(source(endpoint.url, 200))).rejects.toBeInstanceOf(KeySourceUnavailable);
      await endpoint.close();
      endpoint = undefined;
    }
  });
});

describe('remote JWKS through the app', () => {
  it('refuses identities at once after a failed fetch, then recovers once the cooldown is over', async () => {
    let healthy = false;
    const endpoint = await serve((res) => (healthy ? json(res, t?.issuers.ci.jwks) : json(res, {}, 500)));
    try {
      t = await brokerWithJwksUri(endpoint.url.href);
      const ask = async () => (await t!.http.post('/v1/credentials').set(bearer(await t!.as.pipeline())).send(body)).status;
      expect(await ask()).toBe(401);
      expect(lastRejection(t.logs)).toBe('jwks_unavailable');
      healthy = true;
      expect(await ask()).toBe(401);
      expect(endpoint.state.fetches).toBe(1);
      t.clock.advance(JWKS_FAILURE_COOLDOWN_MS);
      expect(await ask()).toBe(201);
      expect(endpoint.state.fetches).toBe(2);
    } finally {
      await endpoint.close();
    }
  });

  it('takes the jwt-svid keys of a SPIFFE bundle served over HTTP', async () => {
    const spire = await createTestIssuer('unused');
    const x509 = await createTestIssuer('unused');
    server = await serveJwks(() => ({ keys: [{ ...spire.publicJwk, use: 'jwt-svid' }, { ...x509.publicJwk, use: 'x509-svid' }], spiffe_refresh_hint: 300 }));
    t = await startTestBroker({
      configure(config) {
        (config.identity as { issuers: unknown[] }).issuers.push({
          name: 'spire',
          kind: 'workload',
          spiffeTrustDomain: 'example.org',
          jwksUri: server!.url,
          audiences: ['jit-broker'],
          algorithms: ['ES256'],
        });
        (config.policies as unknown[]).push({ id: 'svid', match: { issuer: 'spire', subject: 'spiffe://example.org/*' }, scopes: ['artifacts:read'] });
      },
    });
    const sub = 'spiffe://example.org/ns/prod/sa/deployer';
    const svid = (signer: TestIssuer) => signer.token(sub, { iss: undefined }, { now: t!.clock() });
    expect((await t.http.post('/v1/credentials').set(bearer(await svid(spire))).send(body)).status).toBe(201);
    expect((await t.http.post('/v1/credentials').set(bearer(await svid(x509))).send(body)).status).toBe(401);
  });
});
