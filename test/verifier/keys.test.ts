import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createBrokerVerifier, verifyBrokerToken } from '../../src/verifier/index.js';
import { testClock, type TestClock } from '../helpers/broker.js';
import { verifyOutcome } from '../helpers/verifier.js';

/**
 * How the exported verifier holds the broker's JWKS, against a JWKS server the test controls:
 * kept as long as Cache-Control says, fetched again on an unknown kid at most once per cooldown,
 * and refused (never accepted) whatever it cannot fetch or find.
 */

const ISSUER = 'https://broker.example';
const AUDIENCE = 'registry.acme.internal';

interface Key {
  kid: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
}
const makeKey = async (): Promise<Key> => {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const publicJwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(publicJwk);
  return { kid, privateKey, publicJwk: { ...publicJwk, kid, alg: 'ES256', use: 'sig' } };
};

let clock: TestClock;
let published: Key[];
let answer: { status: number; cacheControl: string };
let fetches: number;
let server: ReturnType<typeof createServer>;
let jwksUri: string;

beforeEach(async () => {
  clock = testClock();
  published = [];
  answer = { status: 200, cacheControl: 'public, max-age=60' };
  fetches = 0;
  server = createServer((_req, res) => {
    fetches += 1;
    res.writeHead(answer.status, { 'content-type': 'application/json', 'cache-control': answer.cacheControl });
    res.end(JSON.stringify({ keys: published.map((key) => key.publicJwk) }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  jwksUri = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
});
afterEach(async () => {
  for (const closing of [server, ...others.splice(0)]) {
    closing.closeAllConnections();
    await new Promise((resolve) => closing.close(resolve));
  }
});

/** Another server than the broker's JWKS, for answers that one does not give. */
const others: ReturnType<typeof createServer>[] = [];
async function serve(handler: Parameters<typeof createServer>[1]): Promise<string> {
  const other = createServer(handler);
  others.push(other);
  await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(other.address() as AddressInfo).port}`;
}

const token = (key: Key, kid = key.kid, claims: Record<string, unknown> = {}) =>
  new SignJWT({ scope: 'artifacts:read', client_id: 'ci', idp: 'ci', task_id: 't', request_id: 'r', ...claims })
    .setProtectedHeader({ alg: 'ES256', kid, typ: 'at+jwt' })
    .setIssuer(ISSUER)
    .setSubject('repo:acme/app')
    .setAudience(AUDIENCE)
    .setIssuedAt(Math.floor(clock() / 1000))
    .setExpirationTime(Math.floor(clock() / 1000) + 3600)
    .setJti(crypto.randomUUID())
    .sign(key.privateKey);

const verifier = () => createBrokerVerifier({ issuer: ISSUER, audience: AUDIENCE, jwksUri, now: () => clock(), jwksCooldownMs: 30_000 });
const outcome = verifyOutcome;

describe('a token signed by the broker\'s key but not of its shape', () => {
  it('is refused as invalid, never a TypeError: a scope that is no string', async () => {
    const a = await makeKey();
    published = [a];
    for (const scope of [42, ['artifacts:read'], { artifacts: 'read' }]) {
      expect(await outcome(verifier().verify(await token(a, a.kid, { scope }), { requiredScopes: ['artifacts:read'] }))).toBe('invalid');
    }
  });
});

describe('a token signed by the broker\'s key that is not a broker access token for this call', () => {
  const signed = (key: Key, header: Record<string, unknown>, claims: Record<string, unknown>) =>
    new SignJWT({ iss: ISSUER, sub: 'repo:acme/app', aud: AUDIENCE, iat: Math.floor(clock() / 1000), exp: Math.floor(clock() / 1000) + 3600, jti: crypto.randomUUID(), scope: 'artifacts:read', client_id: 'ci', idp: 'ci', task_id: 't', request_id: 'r', ...claims })
      .setProtectedHeader({ alg: 'ES256', kid: key.kid, typ: 'at+jwt', ...header })
      .sign(key.privateKey);

  it('is refused: another issuer, another typ (a checkpoint, a plain JWT), a scope that only contains the one required, a cnf it cannot check', async () => {
    const a = await makeKey();
    published = [a];
    const rs = verifier();
    expect(await outcome(rs.verify(await signed(a, {}, {}), { requiredScopes: ['artifacts:read'] }))).toBe('ok');
    expect(await outcome(rs.verify(await signed(a, {}, { iss: 'https://other.example' })))).toBe('invalid');
    for (const typ of ['JWT', 'checkpoint+jwt']) expect(await outcome(rs.verify(await signed(a, { typ }, {}))), typ).toBe('invalid');
    expect(await outcome(rs.verify(await signed(a, {}, { scope: 'artifacts:read-all' }), { requiredScopes: ['artifacts:read'] }))).toBe('scope');
    expect(await outcome(rs.verify(await signed(a, {}, { cnf: { jkt: 'x'.repeat(43), 'x5t#S256': 'y'.repeat(43) } })))).toBe('invalid');
  });

  it('is refused as break-glass where the resource server says so, and taken where it does not', async () => {
    const a = await makeKey();
    published = [a];
    const rs = verifier();
    const token = await signed(a, {}, { break_glass: true });
    expect(await outcome(rs.verify(token, { refuseBreakGlass: true }))).toBe('break_glass');
    expect(await outcome(rs.verify(token))).toBe('ok');
  });
});

describe('the verifier\'s copy of the JWKS', () => {
  it('is kept as long as Cache-Control says, and fetched again after', async () => {
    const a = await makeKey();
    published = [a];
    const rs = verifier();
    expect(await outcome(rs.verify(await token(a)))).toBe('ok');
    clock.advance(59_000);
    expect(await outcome(rs.verify(await token(a)))).toBe('ok');
    expect(fetches).toBe(1);
    clock.advance(1_000);
    expect(await outcome(rs.verify(await token(a)))).toBe('ok');
    expect(fetches).toBe(2);
  });

  it('is fetched once for verifications that arrive together', async () => {
    const a = await makeKey();
    published = [a];
    const rs = verifier();
    const tokens = await Promise.all([1, 2, 3, 4, 5].map(() => token(a)));
    expect(await Promise.all(tokens.map((t) => outcome(rs.verify(t))))).toEqual(['ok', 'ok', 'ok', 'ok', 'ok']);
    expect(fetches).toBe(1);
  });

  it('is fetched again for a kid it lacks, at most once per cooldown, and an unknown kid is refused', async () => {
    const [a, b] = [await makeKey(), await makeKey()];
    published = [a];
    const rs = createBrokerVerifier({ issuer: ISSUER, audience: AUDIENCE, jwksUri, now: () => clock(), jwksCooldownMs: 30_000, jwksMaxAgeMs: 3_600_000 });
    answer.cacheControl = 'public, max-age=3600';
    expect(await outcome(rs.verify(await token(a)))).toBe('ok');

    // b signs before this copy knows it (a broker without publishAhead, or another replica's key).
    published = [a, b];
    expect(await outcome(rs.verify(await token(b)))).toBe('invalid'); // fetched a moment ago: not again yet
    expect(fetches).toBe(1);
    clock.advance(30_000);
    expect(await outcome(rs.verify(await token(b)))).toBe('ok');
    expect(fetches).toBe(2);

    // An attacker's made-up kids cost the broker one fetch per cooldown, however many.
    const forger = await makeKey();
    clock.advance(30_000);
    for (let i = 0; i < 20; i += 1) expect(await outcome(rs.verify(await token(forger, `made-up-${i}`)))).toBe('invalid');
    expect(fetches).toBe(3);
    // And a token signed by a key the broker never published stays refused after the refetch.
    clock.advance(30_000);
    expect(await outcome(rs.verify(await token(forger, a.kid)))).toBe('invalid');
  });

  it('is fetched for made-up kids at most once per cooldown while the broker fails too, and once for those that arrive together', async () => {
    const a = await makeKey();
    published = [a];
    answer.cacheControl = 'public, max-age=3600';
    const rs = createBrokerVerifier({ issuer: ISSUER, audience: AUDIENCE, jwksUri, now: () => clock(), jwksCooldownMs: 30_000, jwksMaxAgeMs: 3_600_000 });
    expect(await outcome(rs.verify(await token(a)))).toBe('ok');

    const forger = await makeKey();
    clock.advance(30_000);
    answer.status = 503;
    const forged = [];
    for (let i = 0; i < 20; i += 1) forged.push(await outcome(rs.verify(await token(forger, `made-up-${i}`))));
    expect(forged).toEqual(['unavailable', ...Array.from({ length: 19 }, () => 'invalid')]);
    expect(fetches).toBe(2);
    expect(await outcome(rs.verify(await token(a)))).toBe('ok'); // the copy held still serves

    clock.advance(30_000);
    const together = await Promise.all(Array.from({ length: 10 }, async (_, i) => outcome(rs.verify(await token(forger, `together-${i}`)))));
    expect(together.filter((code) => code !== 'invalid' && code !== 'unavailable')).toEqual([]);
    expect(fetches).toBe(3);
  });

  it('is fetched at most once per cooldown while the broker fails and the copy is stale: meanwhile every token is refused unfetched', async () => {
    const a = await makeKey();
    published = [a];
    const rs = verifier();
    expect(await outcome(rs.verify(await token(a)))).toBe('ok');
    clock.advance(60_000); // past max-age
    answer.status = 503;
    // Good tokens and forged ones alike: each would have fetched from a broker that is down or overloaded.
    const forger = await makeKey();
    const outcomes = [];
    for (let i = 0; i < 20; i += 1) outcomes.push(await outcome(rs.verify(await token(i % 2 === 0 ? a : forger, i % 2 === 0 ? a.kid : `made-up-${i}`))));
    expect(outcomes).toEqual(Array.from({ length: 20 }, () => 'unavailable'));
    expect(fetches).toBe(2);

    clock.advance(29_999);
    answer.status = 200;
    expect(await outcome(rs.verify(await token(a)))).toBe('unavailable');
    expect(fetches).toBe(2);
    clock.advance(1);
    expect(await outcome(rs.verify(await token(a)))).toBe('ok');
    expect(fetches).toBe(3);

    // A verifier whose very first fetch fails waits the cooldown as well.
    answer.status = 500;
    const started = verifier();
    for (let i = 0; i < 5; i += 1) expect(await outcome(started.verify(await token(a)))).toBe('unavailable');
    expect(fetches).toBe(4);
  });

  it('fails closed: a JWKS that cannot be fetched, or is not a JWKS, refuses every token as unavailable', async () => {
    const a = await makeKey();
    published = [a];
    const rs = verifier();
    expect(await outcome(rs.verify(await token(a)))).toBe('ok');
    clock.advance(60_000);
    answer.status = 503;
    expect(await outcome(rs.verify(await token(a)))).toBe('unavailable');
    answer.status = 200;
    clock.advance(30_000); // the cooldown after a failed fetch (below)
    expect(await outcome(rs.verify(await token(a)))).toBe('ok');

    // A refetch for an unknown kid that fails is refused too.
    clock.advance(30_000);
    answer.status = 500;
    expect(await outcome(rs.verify(await token(await makeKey())))).toBe('unavailable');

    const elsewhere = createBrokerVerifier({ issuer: ISSUER, audience: AUDIENCE, jwksUri: 'http://127.0.0.1:9/jwks', now: () => clock() });
    expect(await outcome(elsewhere.verify(await token(a)))).toBe('unavailable');
  });

  it('is never taken from where a redirect leads: refused as unavailable', async () => {
    const attacker = await makeKey();
    let elsewhereFetches = 0;
    const elsewhere = await serve((_req, res) => {
      elsewhereFetches += 1;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [attacker.publicJwk] }));
    });
    const redirecting = await serve((_req, res) => {
      res.writeHead(302, { location: `${elsewhere}/keys` });
      res.end();
    });
    const rs = createBrokerVerifier({ issuer: ISSUER, audience: AUDIENCE, jwksUri: `${redirecting}/.well-known/jwks.json`, now: () => clock() });
    expect(await outcome(rs.verify(await token(attacker)))).toBe('unavailable');
    expect(elsewhereFetches).toBe(0);
  });

  it('is never fetched over plain http from another host than this one: refused when the verifier is made', async () => {
    // The host's own non-loopback address: a JWKS there, served to anyone on the network path.
    const external = Object.values(networkInterfaces()).flat().find((address) => address && !address.internal && address.family === 'IPv4')?.address;
    expect(external, 'this test needs a non-loopback IPv4 address').toBeDefined();
    const attacker = await makeKey();
    let served = 0;
    const plain = createServer((_req, res) => {
      served += 1;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [attacker.publicJwk] }));
    });
    others.push(plain);
    await new Promise<void>((resolve) => plain.listen(0, external, resolve));
    const url = `http://${external}:${(plain.address() as AddressInfo).port}`;
    const identity = () => 'resource-server-identity';
    for (const options of [
      { jwksUri: `${url}/jwks` },
      { brokerUrl: url },
      { issuer: url },
      // The revocation check sends the resource server's identity token there.
      { jwksUri, brokerUrl: url, revocation: { mode: 'list' as const, identityToken: identity } },
      { jwksUri, issuer: url, revocation: { mode: 'introspect' as const, identityToken: identity } },
      { jwksUri: `https://user:secret@broker.example/jwks` },
    ]) {
      expect(() => createBrokerVerifier({ issuer: ISSUER, audience: AUDIENCE, now: () => clock(), ...options }), JSON.stringify(options)).toThrow(
        /createBrokerVerifier: (jwksUri|brokerUrl|issuer) must/,
      );
    }
    expect(served).toBe(0);
    // https anywhere, plain http to this machine (the tests' brokers) and no revocation URL unused are fine.
    expect(() => createBrokerVerifier({ issuer: 'http://broker.internal', audience: AUDIENCE, jwksUri })).not.toThrow();
    expect(() => createBrokerVerifier({ issuer: 'https://broker.example', audience: AUDIENCE, brokerUrl: 'https://jit-broker.internal:8443' })).not.toThrow();
  });

  it('is refused as unavailable past 256 KiB, its length declared or not', async () => {
    const a = await makeKey();
    const padded = JSON.stringify({ keys: [a.publicJwk], padding: 'A'.repeat(256 * 1024) });
    const declared = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(padded) });
      res.end(padded);
    });
    const streamed = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      for (let at = 0; at < padded.length; at += 16 * 1024) res.write(padded.slice(at, at + 16 * 1024));
      res.end();
    });
    for (const url of [declared, streamed]) {
      const rs = createBrokerVerifier({ issuer: ISSUER, audience: AUDIENCE, jwksUri: `${url}/jwks`, now: () => clock() });
      expect([url, await outcome(rs.verify(await token(a)))]).toEqual([url, 'unavailable']);
    }
  });

  it('is kept by verifyBrokerToken per set of options, for a bounded number of sets: a new identityToken function on every call does not grow it without end', async () => {
    const a = await makeKey();
    published = [a];
    const options = (identityToken: () => string) => ({ issuer: ISSUER, audience: AUDIENCE, jwksUri, revocation: { mode: 'introspect' as const, identityToken }, refuseBreakGlass: true });
    const kept = () => 'resource-server-identity';
    // Each set of options is its own verifier with its own copy: the revocation check is not reached (break-glass refused first).
    const breakGlass = await token(a, a.kid, { break_glass: true });
    expect(await outcome(verifyBrokerToken(breakGlass, options(kept)))).toBe('break_glass');
    expect(await outcome(verifyBrokerToken(breakGlass, options(kept)))).toBe('break_glass');
    expect(fetches).toBe(1);
    // A caller that writes the function in the call: a verifier per call. 64 of them...
    for (let i = 0; i < 64; i += 1) expect(await outcome(verifyBrokerToken(breakGlass, options(() => 'resource-server-identity')))).toBe('break_glass');
    expect(fetches).toBe(65);
    // ... and the least recently used is given up, not kept for ever.
    expect(await outcome(verifyBrokerToken(breakGlass, options(kept)))).toBe('break_glass');
    expect(fetches).toBe(66);
  });

  it('never keeps a copy longer than jwksMaxAgeMs, nor past no-store', async () => {
    const a = await makeKey();
    published = [a];
    answer.cacheControl = 'public, max-age=86400';
    const capped = createBrokerVerifier({ issuer: ISSUER, audience: AUDIENCE, jwksUri, now: () => clock(), jwksMaxAgeMs: 120_000 });
    expect(await outcome(capped.verify(await token(a)))).toBe('ok');
    clock.advance(120_000);
    expect(await outcome(capped.verify(await token(a)))).toBe('ok');
    expect(fetches).toBe(2);

    answer.cacheControl = 'no-store';
    const uncached = verifier();
    await uncached.verify(await token(a));
    await uncached.verify(await token(a));
    expect(fetches).toBe(4);
  });
});
