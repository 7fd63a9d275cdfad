import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { calculateJwkThumbprint, CompactSign, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTHeaderParameters, type JWTPayload } from 'jose';
import request from 'supertest';
import { beforeAll, describe, expect, it } from 'vitest';
import { dpopTargetUri, singleDpopHeader, singleDpopProof, verifyDpopProof, type ExpectedDpopProof } from '../../src/dpop/index.js';
import { errorHandler } from '../../src/http/errors.js';
import { InvalidDpopProof, type DpopProofProblem } from '../../src/shared/errors.js';

/**
 * RFC 9449 section 4.3, check by check: proofs the test signs with jose, each broken in one way,
 * each refused with InvalidDpopProof naming what was wrong, and never with anything else.
 */

const NOW = Date.UTC(2026, 11, 7, 12, 0, 0);
const SKEW_MS = 30_000;
const URL_ = 'https://broker.example/v1/credentials';
const ACCESS_TOKEN = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl';

interface ClientKey {
  alg: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
  privateJwk: JWK;
}
const clientKey = async (alg: string): Promise<ClientKey> => {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { alg, privateKey, publicJwk: await exportJWK(publicKey), privateJwk: await exportJWK(privateKey) };
};

let es256: ClientKey;
let eddsa: ClientKey;
let other: ClientKey;
beforeAll(async () => {
  [es256, eddsa, other] = await Promise.all([clientKey('ES256'), clientKey('EdDSA'), clientKey('ES256')]);
});

const expected = (overrides: Partial<ExpectedDpopProof> = {}): ExpectedDpopProof => ({
  method: 'POST',
  url: URL_,
  algorithms: ['ES256', 'EdDSA'],
  now: NOW,
  clockSkewMs: SKEW_MS,
  ...overrides,
});

const ath = (token: string) => createHash('sha256').update(token).digest('base64url');

/** A proof as a client makes it, with `claims` and `header` changing what the test breaks. */
const proof = (
  key: ClientKey,
  claims: Record<string, unknown> = {},
  header: Record<string, unknown> = {},
  signer: CryptoKey = key.privateKey,
) =>
  new SignJWT({ jti: crypto.randomUUID(), htm: 'POST', htu: URL_, iat: Math.floor(NOW / 1000), ...claims } as JWTPayload)
    .setProtectedHeader({ alg: key.alg, typ: 'dpop+jwt', jwk: key.publicJwk, ...header } as JWTHeaderParameters)
    .sign(signer);

const b64 = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/** The refusal a verification ends in: the problem and the detail, or a note of anything else. */
async function refusal(jws: string, overrides: Partial<ExpectedDpopProof> = {}): Promise<{ problem: DpopProofProblem; detail: string }> {
  const error = await verifyDpopProof(jws, expected(overrides)).then(
    () => new Error('accepted'),
    (e: unknown) => e,
  );
  expect(error, String(error)).toBeInstanceOf(InvalidDpopProof);
  const { problem, detail } = error as InvalidDpopProof;
  expect(detail).toMatch(/^The DPoP proof /);
  // A proof or a token is never in an error.
  if (jws.length >= 20) expect(detail).not.toContain(jws.slice(0, 20));
  expect(detail).not.toContain(ACCESS_TOKEN);
  return { problem, detail };
}

describe('a valid DPoP proof', () => {
  it.each(['ES256', 'EdDSA'])('signed with %s is accepted, giving its key thumbprint, jti, iat and replay window', async (alg) => {
    const key = alg === 'ES256' ? es256 : eddsa;
    const jws = await proof(key, { jti: 'proof-1', ath: ath(ACCESS_TOKEN) });
    const verified = await verifyDpopProof(jws, expected({ accessToken: ACCESS_TOKEN, jkt: await calculateJwkThumbprint(key.publicJwk) }));
    expect(verified).toEqual({
      jkt: await calculateJwkThumbprint(key.publicJwk, 'sha256'),
      jti: 'proof-1',
      iat: NOW / 1000,
      replayWindowEndsAt: NOW + SKEW_MS + 1,
    });
  });

  it('is accepted at either edge of the clock skew, its replay window ending only after that', async () => {
    // Accepted at now = iat + skew: a store that forgets a jti whose window ends at or before now
    // must still hold this one.
    expect(await verifyDpopProof(await proof(es256, { iat: (NOW - SKEW_MS) / 1000 }), expected())).toMatchObject({ replayWindowEndsAt: NOW + 1 });
    expect(await verifyDpopProof(await proof(es256, { iat: (NOW + SKEW_MS) / 1000 }), expected())).toMatchObject({ replayWindowEndsAt: NOW + 2 * SKEW_MS + 1 });
  });

  it.each([
    ['an upper-case scheme and host', 'HTTPS://Broker.EXAMPLE/v1/credentials'],
    ['the default port written out', 'https://broker.example:443/v1/credentials'],
    ['an unreserved character percent-encoded', 'https://broker.example/v1/%63redentials'],
    ['a dot segment', 'https://broker.example/v1/tokens/../credentials'],
  ])('names the URL in another spelling of it: %s', async (_name, htu) => {
    expect(await verifyDpopProof(await proof(es256, { htu }), expected())).toBeTruthy();
  });

  it.each(['application/dpop+jwt', 'DPoP+JWT', 'Application/DPOP+jwt'])('has its typ compared as a media type (RFC 7515 4.1.9): %s', async (typ) => {
    expect(await verifyDpopProof(await proof(es256, {}, { typ }), expected())).toBeTruthy();
  });

  it('is compared with the request URL without its query (the server may pass the URL as received)', async () => {
    expect(await verifyDpopProof(await proof(es256), expected({ url: `${URL_}?page=2` }))).toBeTruthy();
    expect(await verifyDpopProof(await proof(es256, { htu: 'http://127.0.0.1:8080/v1/credentials' }), expected({ url: 'http://127.0.0.1:8080/v1/credentials' }))).toBeTruthy();
  });
});

describe('a DPoP proof is refused', () => {
  it('when it is not a signed JWT at all', async () => {
    const garbage: [string, DpopProofProblem][] = [
      ['', 'malformed'],
      ['garbage', 'malformed'],
      ['a.b.c', 'malformed'],
      ['...', 'malformed'],
      ['Bearer x', 'malformed'],
      ['{"alg":"ES256"}', 'malformed'],
      [`${b64('{')}.${b64({})}.`, 'malformed'],
      ['e30.e30.e30', 'type'], // {} as header: no typ
      [`${b64({ typ: 'dpop+jwt', alg: 'ES256', jwk: es256.publicJwk })}`, 'malformed'], // a header alone
      [`${b64({ typ: 'dpop+jwt', alg: 'ES256', jwk: es256.publicJwk })}.${b64({})}.${b64('x')}.${b64('y')}.z`, 'malformed'], // five parts, as a JWE
      [`${b64({ typ: 'dpop+jwt', alg: 'ES256', jwk: es256.publicJwk })}.!!!.AAAA`, 'signature'], // judged before its payload is read
    ];
    for (const [input, problem] of garbage) expect((await refusal(input)).problem, input).toBe(problem);
    expect(await refusal('garbage')).toEqual({ problem: 'malformed', detail: 'The DPoP proof is not a compact JWS.' });
    const payloadNotJson = await new CompactSign(new TextEncoder().encode('not json'))
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: es256.publicJwk })
      .sign(es256.privateKey);
    expect(await refusal(payloadNotJson)).toEqual({ problem: 'malformed', detail: 'The DPoP proof is not a well-formed signed JWT.' });
  });

  it('when it is larger than 8 KiB, before anything of it is read', async () => {
    expect(await refusal(await proof(es256, { padding: 'x'.repeat(64 * 1024) }))).toEqual({ problem: 'too_large', detail: 'The DPoP proof is larger than 8 KiB.' });
    expect((await refusal('a'.repeat(64 * 1024))).problem).toBe('too_large');
    expect((await refusal('é'.repeat(5000))).problem).toBe('too_large'); // 5000 characters, 10000 bytes
  });

  it('when its typ is not dpop+jwt', async () => {
    expect(await refusal(await proof(es256, {}, { typ: 'JWT' }))).toEqual({ problem: 'type', detail: 'The DPoP proof must have the header typ dpop+jwt.' });
    expect((await refusal(await proof(es256, {}, { typ: 'at+jwt' }))).problem).toBe('type');
    expect((await refusal(await proof(es256, {}, { typ: 'text/dpop+jwt' }))).problem).toBe('type');
    expect((await refusal(await proof(es256, {}, { typ: 'application/application/dpop+jwt' }))).problem).toBe('type');
  });

  it('when its alg is symmetric (HS256), even where configured', async () => {
    const secret = new TextEncoder().encode('a shared secret that proves nothing!');
    const hs256 = await new SignJWT({ jti: 'j', htm: 'POST', htu: URL_, iat: NOW / 1000 })
      .setProtectedHeader({ alg: 'HS256', typ: 'dpop+jwt', jwk: { kty: 'oct', k: Buffer.from(secret).toString('base64url') } } as JWTHeaderParameters)
      .sign(secret);
    expect(await refusal(hs256)).toEqual({ problem: 'algorithm', detail: 'The DPoP proof must be signed with one of ES256, EdDSA.' });
    expect(await refusal(hs256, { algorithms: ['ES256', 'HS256'] })).toEqual({ problem: 'algorithm', detail: 'The DPoP proof must be signed with one of ES256.' });
  });

  it('when its alg is none', async () => {
    const unsecured = `${b64({ alg: 'none', typ: 'dpop+jwt', jwk: es256.publicJwk })}.${b64({ jti: 'j', htm: 'POST', htu: URL_, iat: NOW / 1000 })}.`;
    expect((await refusal(unsecured)).problem).toBe('algorithm');
    expect((await refusal(unsecured, { algorithms: ['none', 'ES256'] })).problem).toBe('algorithm');
  });

  it('when its alg is asymmetric but not configured', async () => {
    expect((await refusal(await proof(eddsa), { algorithms: ['ES256'] })).problem).toBe('algorithm');
  });

  it('when its jwk holds a private key, a secret, or no usable key at all', async () => {
    expect(await refusal(await proof(es256, {}, { jwk: es256.privateJwk }))).toEqual({
      problem: 'key',
      detail: 'The DPoP proof must carry a public key only (its jwk holds a private or secret key).',
    });
    expect((await refusal(await proof(es256, {}, { jwk: { kty: 'oct', k: 'c2VjcmV0' } }))).problem).toBe('key');
    expect(await refusal(await proof(es256, {}, { jwk: undefined }))).toEqual({ problem: 'key', detail: 'The DPoP proof must carry its public key in the header (jwk).' });
    const broken = { kty: 'EC', crv: 'P-256', x: 'not-a-coordinate', y: 'nor-this' };
    expect(await refusal(await proof(es256, {}, { jwk: broken }))).toEqual({ problem: 'key', detail: 'The DPoP proof has a jwk that is not a usable ES256 public key.' });
    expect((await refusal(await proof(es256, {}, { jwk: eddsa.publicJwk })))).toEqual({ problem: 'key', detail: 'The DPoP proof has a jwk that is not a usable ES256 public key.' });
    expect((await refusal(await proof(es256, {}, { jwk: { ...es256.publicJwk, alg: 'ES384' } }))).problem).toBe('key');
    expect((await refusal(await proof(es256, {}, { jwk: 'a string' }))).problem).toBe('key');
  });

  it('when its RSA key is larger than 4096 bits or its exponent is not 65537: no verification as slow as its maker likes', async () => {
    const rs256 = await clientKey('RS256');
    const rsa = { algorithms: ['RS256'] };
    await expect(verifyDpopProof(await proof(rs256), expected(rsa))).resolves.toMatchObject({ jkt: await calculateJwkThumbprint(rs256.publicJwk) });
    const huge = { ...rs256.publicJwk, n: Buffer.alloc(16384 / 8, 0xff).toString('base64url') };
    expect(await refusal(await proof(rs256, {}, { jwk: huge }), rsa)).toEqual({
      problem: 'key',
      detail: 'The DPoP proof has an RSA key larger than 4096 bits, or with a public exponent other than 65537.',
    });
    expect((await refusal(await proof(rs256, {}, { jwk: { ...rs256.publicJwk, e: 'AQABAQAB' } }), rsa)).problem).toBe('key');
  });

  it('when it is signed by another key than the one in its header', async () => {
    expect(await refusal(await proof(es256, {}, {}, other.privateKey))).toEqual({
      problem: 'signature',
      detail: 'The DPoP proof has a signature that does not verify with the key in its header (jwk).',
    });
  });

  it('when its header carries a key seen before but another key signed it (keys are imported once, checked always)', async () => {
    await verifyDpopProof(await proof(es256), expected());
    await verifyDpopProof(await proof(other), expected());
    expect((await refusal(await proof(es256, {}, {}, other.privateKey))).problem).toBe('signature');
    expect((await refusal(await proof(other, {}, {}, es256.privateKey))).problem).toBe('signature');
    expect((await verifyDpopProof(await proof(other), expected())).jkt).toBe(await calculateJwkThumbprint(other.publicJwk, 'sha256'));
  });

  it('when a claim is missing or not what it must be', async () => {
    expect(await refusal(await proof(es256, { jti: undefined }))).toEqual({ problem: 'claim', detail: 'The DPoP proof has no jti claim (a string).' });
    expect((await refusal(await proof(es256, { jti: '' }))).problem).toBe('claim');
    expect((await refusal(await proof(es256, { jti: 42 }))).problem).toBe('claim');
    expect((await refusal(await proof(es256, { htm: undefined }))).detail).toBe('The DPoP proof has no htm claim (a string).');
    expect((await refusal(await proof(es256, { htu: undefined }))).detail).toBe('The DPoP proof has no htu claim (a string).');
    expect((await refusal(await proof(es256, { iat: undefined }))).detail).toBe('The DPoP proof has no iat claim (a number).');
    expect((await refusal(await proof(es256, { iat: 'now' }))).problem).toBe('claim');
    expect((await refusal(await proof(es256, { jti: 'j'.repeat(257) }))).detail).toBe('The DPoP proof has a jti that is not well-formed text (no lone surrogate, no NUL) of at most 256 bytes.');
    expect((await refusal(await proof(es256, { jti: 'lone \ud800 surrogate' }))).problem).toBe('claim');
  });

  it('when it is for another HTTP method', async () => {
    expect(await refusal(await proof(es256, { htm: 'GET' }))).toEqual({ problem: 'method', detail: 'The DPoP proof is for another HTTP method: its htm must be POST.' });
    expect((await refusal(await proof(es256, { htm: 'post' }))).problem).toBe('method'); // methods are case-sensitive
  });

  it.each([
    ['another host', 'https://elsewhere.example/v1/credentials'],
    ['another path', 'https://broker.example/v1/credentials/123/token'],
    ['a trailing slash', 'https://broker.example/v1/credentials/'],
    ['another scheme', 'http://broker.example/v1/credentials'],
    ['another port', 'https://broker.example:8443/v1/credentials'],
    // RFC 3986 section 6.2.2.1: only the scheme and host are compared without regard to case.
    ['the path in upper case', 'https://broker.example/V1/CREDENTIALS'],
    ['one letter of the path in upper case', 'HTTPS://BROKER.EXAMPLE/v1/Credentials'],
    ['a percent-encoded upper-case letter of the path', 'https://broker.example/v1/%43redentials'],
  ])('when it is for another URL: %s', async (_name, htu) => {
    expect(await refusal(await proof(es256, { htu }))).toEqual({ problem: 'url', detail: `The DPoP proof is for another URL: its htu must be ${URL_}.` });
  });

  it('when its htu carries a query, a fragment or user information, or is no http(s) URL', async () => {
    for (const htu of [`${URL_}?x=1`, `${URL_}?`, `${URL_}#top`]) {
      expect(await refusal(await proof(es256, { htu }))).toEqual({
        problem: 'url',
        detail: 'The DPoP proof has an htu with a query or fragment: it names the URL without them.',
      });
    }
    for (const htu of ['https://alice@broker.example/v1/credentials', 'ftp://broker.example/v1/credentials', 'https:broker.example/v1/credentials', ' https://broker.example/v1/credentials', 'https://broker.example\\v1/credentials', '/v1/credentials']) {
      expect(await refusal(await proof(es256, { htu }))).toEqual({ problem: 'url', detail: 'The DPoP proof has an htu that is not an http(s) URL without user information.' });
    }
  });

  it('when it was made longer ago than the clock skew (stale), or expired', async () => {
    expect(await refusal(await proof(es256, { iat: (NOW - SKEW_MS) / 1000 - 1 }))).toEqual({
      problem: 'stale',
      detail: 'The DPoP proof was made more than 30 s ago (its iat): make a fresh proof for every request.',
    });
    expect((await refusal(await proof(es256, { exp: NOW / 1000 - 60 }))).problem).toBe('stale');
  });

  it('when it is dated in the future beyond the clock skew', async () => {
    expect(await refusal(await proof(es256, { iat: (NOW + SKEW_MS) / 1000 + 1 }))).toEqual({ problem: 'future', detail: 'The DPoP proof is dated more than 30 s in the future (its iat).' });
    expect((await refusal(await proof(es256, { nbf: NOW / 1000 + 3600 }))).problem).toBe('future');
  });

  it('when it is for another access token than the one presented, or names none', async () => {
    expect(await refusal(await proof(es256, { ath: ath('another token') }), { accessToken: ACCESS_TOKEN })).toEqual({
      problem: 'access_token_hash',
      detail: 'The DPoP proof was made for another access token (its ath).',
    });
    expect((await refusal(await proof(es256), { accessToken: ACCESS_TOKEN })).detail).toBe(
      'The DPoP proof has no ath claim (the hash of the access token it is sent with).',
    );
  });

  it('when it is signed by another key than the one the token is bound to', async () => {
    expect(await refusal(await proof(es256), { jkt: await calculateJwkThumbprint(other.publicJwk) })).toEqual({
      problem: 'key_mismatch',
      detail: 'The DPoP proof is signed by another key than the one the token is bound to (cnf.jkt).',
    });
  });
});

describe('the one DPoP header of a request', () => {
  it('is its value, or none; two values, or two joined by a comma, are refused', () => {
    expect(singleDpopProof(undefined)).toBeUndefined();
    expect(singleDpopProof([])).toBeUndefined();
    expect(singleDpopProof('a.b.c')).toBe('a.b.c');
    expect(singleDpopProof(['a.b.c'])).toBe('a.b.c');
    for (const several of [['a.b.c', 'd.e.f'], 'a.b.c, d.e.f', ['a.b.c,d.e.f']]) {
      expect(() => singleDpopProof(several)).toThrow(InvalidDpopProof);
    }
    try {
      singleDpopProof(['a.b.c', 'd.e.f']);
    } catch (error) {
      expect(error).toMatchObject({ problem: 'several', detail: 'A request carries one DPoP proof: this one has several DPoP headers.' });
    }
  });

  it('is read apart from a second one that express would join to it', async () => {
    const seen: { joined: unknown; single?: string; refused?: string }[] = [];
    const app = express();
    app.post('/v1/credentials', (req, res) => {
      const entry: (typeof seen)[number] = { joined: req.headers.dpop };
      try {
        entry.single = singleDpopHeader(req);
      } catch (error) {
        entry.refused = (error as InvalidDpopProof).problem;
      }
      seen.push(entry);
      res.end();
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const { port } = server.address() as AddressInfo;
    const raw = (headers: string) =>
      new Promise<void>((resolve, reject) => {
        const socket = connect(port, '127.0.0.1', () => socket.end(`POST /v1/credentials HTTP/1.1\r\nHost: x\r\n${headers}Content-Length: 0\r\nConnection: close\r\n\r\n`));
        socket.on('data', () => undefined).on('end', resolve).on('error', reject);
      });
    try {
      await raw('DPoP: a.b.c\r\nDPoP: d.e.f\r\n');
      await raw('DPoP: a.b.c\r\n');
      await raw('');
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
    expect(seen).toEqual([{ joined: 'a.b.c, d.e.f', refused: 'several' }, { joined: 'a.b.c', single: 'a.b.c' }, { joined: undefined }]);
  });
});

describe('a refused proof at the broker', () => {
  it('is a 400 invalid_request naming DPoP under /v1, and invalid_dpop_proof (RFC 9449) under /oauth2', async () => {
    const app = express();
    app.use((req, _res, next) => {
      (req as unknown as { log: unknown }).log = { info: () => undefined, error: () => undefined };
      next();
    });
    const fail = async () => {
      await verifyDpopProof('garbage', expected());
    };
    app.post('/v1/credentials', (_req, _res, next) => void fail().catch(next));
    app.post('/oauth2/token', (_req, _res, next) => void fail().catch(next));
    app.use(errorHandler);

    const v1 = await request(app).post('/v1/credentials');
    expect(v1.status).toBe(400);
    expect(v1.body).toEqual({ type: 'urn:jit-broker:problem:invalid_request', title: 'Invalid request', status: 400, detail: 'The DPoP proof is not a compact JWS.' });
    const oauth = await request(app).post('/oauth2/token');
    expect(oauth.status).toBe(400);
    expect(oauth.body).toEqual({ error: 'invalid_dpop_proof', error_description: 'The DPoP proof is not a compact JWS.' });
  });
});

describe('the target URI of a path', () => {
  it('is the public base URL (the issuer) and the path, whatever slashes join them', () => {
    expect(dpopTargetUri('https://broker.example', '/v1/credentials')).toBe('https://broker.example/v1/credentials');
    expect(dpopTargetUri('https://broker.example/', '/oauth2/token')).toBe('https://broker.example/oauth2/token');
    expect(dpopTargetUri('https://acme.example/broker/', 'oauth2/token')).toBe('https://acme.example/broker/oauth2/token');
  });
});
