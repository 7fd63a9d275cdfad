import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { createBrokerVerifier, type BrokerVerifierOptions } from '../../src/verifier/index.js';
import { testClock, type TestClock } from '../helpers/broker.js';
import { AUDIENCE, startTokenMint, type TokenMint } from '../helpers/minted.js';
import { verifyOutcome } from '../helpers/verifier.js';

/**
 * The verifier's revocation check against a broker stand-in the test controls (its keys from the
 * broker's mint function, served apart): what it does with answers a real broker would not give,
 * or gives at awkward times. verifier.test.ts checks it against the broker itself.
 */

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

let tokens: TokenMint;
let clock: TestClock;
const servers: Server[] = [];
let handle: Handler;
let brokerUrl: string;
let revocationFetches: number;

async function serve(handler: Handler): Promise<string> {
  const server = createServer(handler);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

const json = (res: ServerResponse, body: unknown) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};

beforeAll(async () => {
  tokens = await startTokenMint();
});
afterAll(async () => {
  await tokens.close();
});
beforeEach(async () => {
  clock = testClock();
  revocationFetches = 0;
  handle = (_req, res) => json(res, { items: [], next_cursor: null });
  brokerUrl = await serve((req, res) => {
    if (req.url?.startsWith('/v1/revocations')) revocationFetches += 1;
    handle(req, res);
  });
});
afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
});

const verifier = (mode: 'list' | 'introspect' = 'list', options: Partial<BrokerVerifierOptions> = {}) =>
  createBrokerVerifier({
    issuer: tokens.issuer,
    audience: AUDIENCE,
    brokerUrl,
    jwksUri: tokens.jwksUri,
    now: () => clock(),
    revocation: { mode, identityToken: () => 'resource-server-identity', cacheMs: 10_000 },
    ...options,
  });
const outcome = verifyOutcome;

describe('the revocation check', () => {
  it('follows no redirect, in either mode: refused as unavailable', async () => {
    let elsewhereCalls = 0;
    const elsewhere = await serve((_req, res) => {
      elsewhereCalls += 1;
      json(res, { items: [], next_cursor: null, active: true });
    });
    handle = (req, res) => {
      res.writeHead(307, { location: `${elsewhere}${req.url}` });
      res.end();
    };
    const token = await tokens.mint({}, clock());
    expect(await outcome(verifier('list').verify(token))).toBe('unavailable');
    expect(await outcome(verifier('introspect').verify(token))).toBe('unavailable');
    expect(elsewhereCalls).toBe(0);
  });

  it('is listed once for all the verifications that find the list stale together', async () => {
    let held = Promise.resolve();
    let listCalls = 0;
    const heldFetch: typeof fetch = async (url, init) => {
      if (String(url).startsWith(`${brokerUrl}/v1/revocations`)) {
        listCalls += 1;
        await held;
      }
      return fetch(url, init);
    };
    const rs = verifier('list', { fetch: heldFetch });
    const offline = verifier('list', { revocation: undefined });
    const token = await tokens.mint({}, clock());
    expect([await outcome(rs.verify(token)), await outcome(offline.verify(token))]).toEqual(['ok', 'ok']);

    clock.advance(10_000);
    let release = () => {};
    held = new Promise((resolve) => {
      release = resolve;
    });
    const verifying = Promise.all(Array.from({ length: 50 }, () => outcome(rs.verify(token))));
    await vi.waitFor(() => expect(listCalls).toBeGreaterThanOrEqual(2));
    // As many signatures checked after theirs: the 50 are at the revocation check by now, the list still held.
    await Promise.all(Array.from({ length: 50 }, () => offline.verify(token)));
    await new Promise((resolve) => setImmediate(resolve));
    release();
    expect(await verifying).toEqual(Array.from({ length: 50 }, () => 'ok'));
    expect(listCalls).toBe(2);
  });

  it('dates the list from the start of its fetch: a revocation published while its pages were read is looked for within the cache period of that start', async () => {
    const token = await tokens.mint({}, clock());
    const { jti, exp } = JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString()) as { jti: string; exp: number };
    handle = (req, res) => {
      // Each page takes 4 s (the test's time).
      clock.advance(4_000);
      json(res, req.url?.includes('cursor=second') ? { items: [], next_cursor: null } : { items: [], next_cursor: 'second' });
    };
    const rs = verifier('list');
    expect(await outcome(rs.verify(token))).toBe('ok'); // listed from +0 s to +8 s
    expect(revocationFetches).toBe(2);

    // Revoked at +2 s, while the pages were read, on the first page once it had been read.
    handle = (req, res) => json(res, req.url?.includes('cursor=second') ? { items: [], next_cursor: null } : { items: [{ jti, exp }], next_cursor: 'second' });
    clock.advance(3_000); // +11 s: past the cache period since the fetch began, though not since it ended
    expect(await outcome(rs.verify(token))).toBe('revoked');
    expect(revocationFetches).toBe(4);
  });

  it('asks a failing broker at most once per cache period, in either mode: meanwhile refused as unavailable, unasked', async () => {
    let calls = 0;
    let status = 503;
    handle = (req, res) => {
      calls += 1;
      if (status !== 200) {
        res.writeHead(status);
        res.end();
      } else json(res, req.url?.startsWith('/v1/revocations') ? { items: [], next_cursor: null } : { active: true });
    };
    for (const mode of ['list', 'introspect'] as const) {
      calls = 0;
      status = 503;
      const rs = verifier(mode);
      const token = await tokens.mint({}, clock());
      const outcomes = [];
      for (let i = 0; i < 20; i += 1) outcomes.push(await outcome(rs.verify(i % 2 === 0 ? token : await tokens.mint({}, clock()))));
      expect([mode, outcomes]).toEqual([mode, Array.from({ length: 20 }, () => 'unavailable')]);
      expect([mode, calls]).toEqual([mode, 1]);

      status = 200;
      clock.advance(9_999);
      expect([mode, await outcome(rs.verify(token))]).toEqual([mode, 'unavailable']);
      expect([mode, calls]).toEqual([mode, 1]);
      clock.advance(1);
      expect([mode, await outcome(rs.verify(token))]).toEqual([mode, 'ok']);
      expect([mode, calls]).toEqual([mode, 2]);
    }
  });

  it('refuses, as unavailable, an answer it cannot read or that is not what the broker sends', async () => {
    const token = await tokens.mint({}, clock());
    for (const body of ['not json', 'null', '{}', '{"items":"none"}', '{"items":[{"jti":7,"exp":1}]}', '{"items":[null]}', '{"items":[],"next_cursor":3}']) {
      handle = (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(body);
      };
      expect([body, await outcome(verifier('list').verify(token))]).toEqual([body, 'unavailable']);
      if (body === 'not json' || body === 'null') expect([body, await outcome(verifier('introspect').verify(token))]).toEqual([body, 'unavailable']);
    }
  });

  it('refuses, as unavailable, an answer past 256 KiB, in either mode', async () => {
    const token = await tokens.mint({}, clock());
    const exp = Math.floor(clock() / 1000) + 300;
    const items = Array.from({ length: 5_000 }, () => ({ jti: crypto.randomUUID(), exp }));
    handle = (req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      // Written in pieces, its length undeclared: the bound holds for what is read, not what is said.
      const body = JSON.stringify(req.url?.startsWith('/v1/revocations') ? { items, next_cursor: null } : { active: true, padding: 'A'.repeat(256 * 1024) });
      for (let at = 0; at < body.length; at += 16 * 1024) res.write(body.slice(at, at + 16 * 1024));
      res.end();
    };
    for (const mode of ['list', 'introspect'] as const) expect(await outcome(verifier(mode).verify(token))).toBe('unavailable');
  });

  it('refuses, as unavailable, an answer whose body fails while read (a timeout mid-body)', async () => {
    const token = await tokens.mint({}, clock());
    const failingBody: typeof fetch = async (url, init) => {
      if (!String(url).startsWith(brokerUrl)) return fetch(url, init);
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode('{"items":['));
          controller.error(new DOMException('The operation was aborted due to timeout', 'TimeoutError'));
        },
      });
      return new Response(body, { status: 200, headers: { 'content-type': 'application/json' } });
    };
    for (const mode of ['list', 'introspect'] as const) expect(await outcome(verifier(mode, { fetch: failingBody }).verify(token))).toBe('unavailable');
  });
});
