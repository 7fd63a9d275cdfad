import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBrokerVerifier, verifyBrokerToken } from '../../src/verifier/index.js';
import { BROKER_ISSUER, bearer, listen, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { verifyOutcome } from '../helpers/verifier.js';

/**
 * The verifier's revocation check at the edges of a token's life, its cache of verifiers, and a
 * JWKS it cannot use: a revoked token is never accepted because the broker stopped listing it at
 * its exp, a caller's own revocation settings are honoured, and what cannot be used is unavailable.
 */

let t: TestBroker;
let server: Awaited<ReturnType<typeof listen>>;
const extra: Server[] = [];
beforeAll(async () => {
  t = await startTestBroker();
  server = await listen(t);
});
afterAll(async () => {
  for (const s of extra) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
  await server.close();
  await t.close();
});

const issue = async (payload: Record<string, unknown> = {}) =>
  (
    await t.http
      .post('/v1/credentials')
      .set(bearer(await t.as.pipeline()))
      .send({ task_id: 'build-1', scopes: ['artifacts:read', 'logs:read'], audience: 'registry.acme.internal', ...payload })
  ).body as { request_id: string; access_token: string };
const revoke = async (requestId: string) =>
  expect((await t.http.post(`/v1/credentials/${requestId}/revoke`).set(bearer(await t.as.pipeline())).send({ reason: 'leaked' })).status).toBeLessThan(300);

const verifier = (revocation?: 'introspect' | 'list', cacheMs = 10_000) =>
  createBrokerVerifier({
    issuer: BROKER_ISSUER,
    brokerUrl: server.url,
    audience: 'registry.acme.internal',
    now: () => t.clock(),
    ...(revocation ? { revocation: { mode: revocation, identityToken: () => t.as.pipeline({}, 'resource-server:registry'), cacheMs } } : {}),
  });
const outcome = verifyOutcome;

describe('list mode, near a token\'s exp', () => {
  it('refuses a revoked token past its exp, inside the clock tolerance, to a verifier started since (the broker lists it until exp)', async () => {
    const grant = await issue({ ttl_seconds: 60 });
    await revoke(grant.request_id);
    // Revoked: refused by a list-mode verifier now.
    expect(await outcome(verifier('list').verify(grant.access_token))).toBe('revoked');
    t.clock.advance(65_000); // past exp (60 s) but inside the 30 s tolerance
    // A verifier that starts now (a resource server restarted, a new replica) reads a list without it.
    expect(await outcome(verifier('list').verify(grant.access_token))).toBe('expired');
  });

  it('refuses a token revoked in the last cache period before its exp, once the list read after its exp cannot name it', async () => {
    const grant = await issue({ ttl_seconds: 60 });
    const rs = verifier('list', 10_000);
    t.clock.advance(52_000);
    expect(await outcome(rs.verify(grant.access_token))).toBe('ok'); // list read at +52 s
    t.clock.advance(3_000);
    await revoke(grant.request_id); // revoked at +55 s
    t.clock.advance(8_000); // +63 s: list stale, re-read, broker no longer lists (exp +60 s)
    expect(await outcome(rs.verify(grant.access_token))).toBe('expired');
  });
});

describe('introspect mode, past exp inside the tolerance', () => {
  it('refuses a token never revoked as expired, not as revoked', async () => {
    const grant = await issue({ ttl_seconds: 60 });
    t.clock.advance(65_000);
    expect(await outcome(verifier().verify(grant.access_token))).toBe('ok');
    expect(await outcome(verifier('introspect', 0).verify(grant.access_token))).toBe('expired');
  });
});

describe('verifyBrokerToken', () => {
  it('honours each call\'s own revocation settings: a verifier is reused only for the same options', async () => {
    const grant = await issue();
    const base = {
      issuer: BROKER_ISSUER,
      brokerUrl: server.url,
      audience: 'registry.acme.internal',
      clockToleranceSeconds: 10 ** 9,
    };
    const id = () => t.as.pipeline({}, 'resource-server:registry');
    expect(await outcome(verifyBrokerToken(grant.access_token, { ...base, revocation: { mode: 'introspect', identityToken: id, cacheMs: 600_000 } }))).toBe('ok');
    await revoke(grant.request_id);
    // A caller asking for no caching at all (freshest) gets the other caller's 10-minute-old answer.
    expect(await outcome(verifyBrokerToken(grant.access_token, { ...base, revocation: { mode: 'introspect', identityToken: id, cacheMs: 0 } }))).toBe('revoked');
  });
});

async function jwksServer(body: () => unknown): Promise<string> {
  const s = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=60' });
    res.end(JSON.stringify(body()));
  });
  extra.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}/jwks`;
}

/** A broker in front of the test's: its JWKS passed through, its revocation answers the test's own. */
async function brokerAnswering(answers: { introspect?: () => unknown; introspectStatus?: number; revocations?: (cursor: string | null) => unknown }): Promise<string> {
  const s = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const reply = (body: unknown, status = 200) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    if (url.pathname === '/.well-known/jwks.json') return void fetch(`${server.url}${url.pathname}`).then(async (r) => reply(await r.json()));
    if (url.pathname === '/oauth2/introspect' && answers.introspect) return reply(answers.introspect(), answers.introspectStatus);
    if (url.pathname === '/v1/revocations' && answers.revocations) return reply(answers.revocations(url.searchParams.get('cursor')));
    res.writeHead(404).end();
  });
  extra.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}
const answeredBy = (brokerUrl: string, mode: 'introspect' | 'list') =>
  createBrokerVerifier({ issuer: BROKER_ISSUER, brokerUrl, audience: 'registry.acme.internal', now: () => t.clock(), revocation: { mode, identityToken: () => t.as.pipeline({}, 'resource-server:registry') } });

describe('revocation answers', () => {
  it('in introspect mode, accept a token only on active: true, nothing that merely is not false', async () => {
    const grant = await issue();
    for (const body of [{}, { active: 'true' }, { active: 1 }]) {
      expect(await outcome(answeredBy(await brokerAnswering({ introspect: () => body }), 'introspect').verify(grant.access_token)), JSON.stringify(body)).not.toBe('ok');
    }
    expect(await outcome(answeredBy(await brokerAnswering({ introspect: () => ({ active: true }) }), 'introspect').verify(grant.access_token))).toBe('ok');
  });

  it('in introspect mode, take a refusal to answer (403 without the role) as unavailable, not as revoked', async () => {
    const grant = await issue();
    const url = await brokerAnswering({ introspect: () => ({ error: 'insufficient_scope', active: false }), introspectStatus: 403 });
    expect(await outcome(answeredBy(url, 'introspect').verify(grant.access_token))).toBe('unavailable');
  });

  it('in introspect mode, keep an inactive answer for the cache period: refused again without asking again', async () => {
    const grant = await issue();
    let asked = 0;
    const rs = answeredBy(await brokerAnswering({ introspect: () => ((asked += 1), { active: false }) }), 'introspect');
    expect(await outcome(rs.verify(grant.access_token))).toBe('revoked');
    expect(await outcome(rs.verify(grant.access_token))).toBe('revoked');
    expect(asked).toBe(1);
  });

  it('in introspect mode, ask once for a token verified many times at once: one call, one answer for all', async () => {
    const grant = await issue();
    let asked = 0;
    const rs = answeredBy(await brokerAnswering({ introspect: () => ((asked += 1), { active: true }) }), 'introspect');
    const outcomes = await Promise.all(Array.from({ length: 20 }, () => outcome(rs.verify(grant.access_token))));
    expect(outcomes).toEqual(Array(20).fill('ok'));
    expect(asked).toBe(1);
  });

  it('in list mode, read every page of the list: a jti on the second page is revoked', async () => {
    const grant = await issue();
    const { jti, exp } = JSON.parse(Buffer.from(grant.access_token.split('.')[1] as string, 'base64url').toString()) as { jti: string; exp: number };
    const asked: (string | null)[] = [];
    const url = await brokerAnswering({
      revocations: (cursor) => {
        asked.push(cursor);
        return cursor === null ? { items: [], next_cursor: 'c2' } : { items: [{ jti, exp }], next_cursor: null };
      },
    });
    expect(await outcome(answeredBy(url, 'list').verify(grant.access_token))).toBe('revoked');
    expect(asked).toEqual([null, 'c2']);
  });

  it('in list mode, stop reading a list whose broker gives again a cursor already followed: unavailable, not read for ever', async () => {
    const grant = await issue();
    for (const [name, next] of [
      ['the same cursor', () => 'c1'],
      ['a cycle of two', (cursor: string | null) => (cursor === 'c1' ? 'c2' : 'c1')],
    ] as const) {
      const asked: (string | null)[] = [];
      const url = await brokerAnswering({
        // Past 50 pages the list ends, so a verifier that would follow it for ever ends too, and the test fails rather than hangs.
        revocations: (cursor) => (asked.push(cursor), { items: [], next_cursor: asked.length > 50 ? null : next(cursor) }),
      });
      const rs = answeredBy(url, 'list');
      expect(await outcome(rs.verify(grant.access_token)), name).toBe('unavailable');
      expect(asked.length, name).toBeLessThanOrEqual(3);
      // As from a broker that cannot be asked: refused unasked for the cache period, not read again per token.
      const calls = asked.length;
      expect(await outcome(rs.verify(grant.access_token)), name).toBe('unavailable');
      expect(asked.length, name).toBe(calls);
    }
  });
});

describe('JWKS answers that are not a usable key set', () => {
  it('refuses every token as unavailable when the JWKS holds a member that is no key, or a private key', async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    const pub = await exportJWK(publicKey);
    const kid = await calculateJwkThumbprint(pub);
    const tok = await new SignJWT({ scope: 'a', client_id: 'c' })
      .setProtectedHeader({ alg: 'ES256', kid, typ: 'at+jwt' })
      .setIssuer('https://b.example')
      .setSubject('s')
      .setAudience('rs')
      .setIssuedAt()
      .setExpirationTime('5m')
      .setJti('j')
      .sign(privateKey);
    const good = await jwksServer(() => ({ keys: [{ ...pub, kid, alg: 'ES256', use: 'sig' }] }));
    expect(await outcome(createBrokerVerifier({ issuer: 'https://b.example', audience: 'rs', jwksUri: good }).verify(tok))).toBe('ok');
    const bad1 = await jwksServer(() => ({ keys: [{ ...pub, kid, alg: 'ES256', use: 'sig' }, 1] }));
    const priv = await exportJWK(privateKey);
    const bad2 = await jwksServer(() => ({ keys: [{ ...priv, kid, alg: 'ES256', use: 'sig' }] }));
    const results = [];
    for (const uri of [bad1, bad2]) results.push(await outcome(createBrokerVerifier({ issuer: 'https://b.example', audience: 'rs', jwksUri: uri }).verify(tok)));
    expect(results).toEqual(['unavailable', 'unavailable']);
  });
});
