import { calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { signDpopProof, type DpopSigningKey } from '../../src/dpop/index.js';
import { BrokerTokenError, createBrokerVerifier, type BrokerVerifierOptions, type PresentedRequest } from '../../src/verifier/index.js';
import { testClock, type TestClock } from '../helpers/broker.js';
import { AUDIENCE, startTokenMint, type TokenMint } from '../helpers/minted.js';

/**
 * A resource server checks a DPoP-bound broker token (cnf.jkt) with the proof of the request it
 * came with (RFC 9449 section 7): the proof's method, URL, token hash, key and freshness, and
 * that this process has not seen it before. Tokens come from the broker's mint function with a
 * key of the test's, its JWKS served on loopback.
 */

const RS_URL = 'https://registry.acme.internal/v2/acme/app/blobs/sha256:abc';

let tokens: TokenMint;
let holder: DpopSigningKey;
let thief: DpopSigningKey;
let jkt: string;
let clock: TestClock;

const dpopKey = async (alg: 'ES256' | 'EdDSA'): Promise<DpopSigningKey> => {
  const { privateKey, publicKey } = await generateKeyPair(alg);
  return { alg, privateKey, publicJwk: await exportJWK(publicKey) };
};

beforeAll(async () => {
  tokens = await startTokenMint();
  [holder, thief] = await Promise.all([dpopKey('ES256'), dpopKey('EdDSA')]);
  jkt = await calculateJwkThumbprint(holder.publicJwk);
});
afterAll(async () => {
  await tokens.close();
});
beforeEach(() => {
  clock = testClock();
});

const verifier = (options: Partial<BrokerVerifierOptions> = {}) =>
  createBrokerVerifier({ issuer: tokens.issuer, audience: AUDIENCE, jwksUri: tokens.jwksUri, now: () => clock(), ...options });
const bound = () => tokens.mint({ cnf: { jkt } }, clock());
const proofFor = (token: string, overrides: { method?: string; url?: string; key?: DpopSigningKey; now?: number } = {}) =>
  signDpopProof(overrides.key ?? holder, { method: overrides.method ?? 'GET', url: overrides.url ?? RS_URL, accessToken: token, now: overrides.now ?? clock() });
const request = (authorization: string | undefined, dpop?: string | string[]): PresentedRequest => ({ method: 'GET', url: RS_URL, authorization, dpop });

const refusal = async (promise: Promise<unknown>) => {
  const error = await promise.then(
    () => new Error('accepted'),
    (e: unknown) => e,
  );
  expect(error, String(error)).toBeInstanceOf(BrokerTokenError);
  const { code, message } = error as BrokerTokenError;
  return { code, message };
};

describe('a DPoP-bound token with the proof of its request', () => {
  it('is accepted, its claims carrying the binding', async () => {
    const token = await bound();
    const claims = await verifier().verifyRequest(request(`DPoP ${token}`, [await proofFor(token)]), { requiredScopes: ['artifacts:read'] });
    expect(claims).toMatchObject({ sub: 'repo:acme/app:ref:refs/heads/main', cnf: { jkt } });
  });

  it('is accepted with the scheme in any case, a proof as one string, and a request URL carrying a query', async () => {
    const token = await bound();
    const rs = verifier();
    expect(await rs.verifyRequest({ method: 'GET', url: `${RS_URL}?n=1`, authorization: `dpop ${token}`, dpop: await proofFor(token) })).toBeTruthy();
  });

  it('is refused when the proof was used before: replay, remembered by this process for the proof window', async () => {
    const token = await bound();
    const proof = await proofFor(token);
    const rs = verifier();
    await rs.verifyRequest(request(`DPoP ${token}`, proof));
    expect(await refusal(rs.verifyRequest(request(`DPoP ${token}`, proof)))).toEqual({
      code: 'dpop',
      message: 'the DPoP proof was used before: make a fresh proof for every request',
    });
    clock.advance(15_000);
    expect((await refusal(rs.verifyRequest(request(`DPoP ${token}`, proof)))).code).toBe('dpop');
    // Past the window the proof is stale, whatever this process remembers.
    clock.advance(16_000);
    expect(await refusal(rs.verifyRequest(request(`DPoP ${token}`, proof)))).toEqual({
      code: 'dpop',
      message: 'The DPoP proof was made more than 30 s ago (its iat): make a fresh proof for every request.',
    });
  });

  it.each([
    ['another method', { method: 'DELETE' }, 'The DPoP proof is for another HTTP method: its htm must be GET.'],
    ['another URL', { url: 'https://registry.acme.internal/v2/acme/other/blobs' }, `The DPoP proof is for another URL: its htu must be ${RS_URL}.`],
    ['another host', { url: 'https://evil.example/v2/acme/app/blobs/sha256:abc' }, `The DPoP proof is for another URL: its htu must be ${RS_URL}.`],
    ['the key of someone else (a thief with the token)', { key: 'thief' }, 'The DPoP proof is signed by another key than the one the token is bound to (cnf.jkt).'],
    ['a stale iat', { now: -31_000 }, 'The DPoP proof was made more than 30 s ago (its iat): make a fresh proof for every request.'],
    ['a future iat', { now: 31_000 }, 'The DPoP proof is dated more than 30 s in the future (its iat).'],
  ] as const)('is refused when the proof has %s', async (_name, change, message) => {
    const token = await bound();
    const overrides = {
      ...('method' in change ? { method: change.method } : {}),
      ...('url' in change ? { url: change.url } : {}),
      ...('key' in change ? { key: thief } : {}),
      ...('now' in change ? { now: clock() + change.now } : {}),
    };
    expect(await refusal(verifier().verifyRequest(request(`DPoP ${token}`, await proofFor(token, overrides))))).toEqual({ code: 'dpop', message });
  });

  it.each([
    'https://registry.acme.internal/admin/../v2/acme/app/blobs/sha256:abc',
    'https://registry.acme.internal/admin/%2e%2e/v2/acme/app/blobs/sha256:abc',
    'https://registry.acme.internal/admin/.%2E/v2/acme/app/blobs/sha256:abc',
    'https://registry.acme.internal/v2/./acme/app/blobs/sha256:abc',
  ])('is refused at a request URL with dot segments, which the server routes elsewhere than where they normalise to: %s', async (url) => {
    // express hands /admin/../v2/... to the routes under /admin: a proof made for /v2/... must not be taken there.
    const token = await bound();
    const proof = await proofFor(token);
    expect(await refusal(verifier().verifyRequest({ method: 'GET', url, authorization: `DPoP ${token}`, dpop: proof }))).toEqual({
      code: 'dpop',
      message: 'The DPoP proof was sent with a request whose path holds a dot segment (. or ..): send the path resolved.',
    });
    expect(await verifier().verifyRequest(request(`DPoP ${token}`, proof))).toBeTruthy();
  });

  it('is refused when the proof was made for another token of the same key', async () => {
    const [token, other] = [await bound(), await bound()];
    expect(await refusal(verifier().verifyRequest(request(`DPoP ${token}`, await proofFor(other))))).toEqual({
      code: 'dpop',
      message: 'The DPoP proof was made for another access token (its ath).',
    });
  });

  it('is refused with two DPoP headers, or none', async () => {
    const token = await bound();
    const rs = verifier();
    expect(await refusal(rs.verifyRequest(request(`DPoP ${token}`, [await proofFor(token), await proofFor(token)])))).toEqual({
      code: 'dpop',
      message: 'A request carries one DPoP proof: this one has several DPoP headers.',
    });
    expect(await refusal(rs.verifyRequest(request(`DPoP ${token}`)))).toEqual({ code: 'dpop', message: 'Authorization: DPoP needs a DPoP proof header' });
    expect((await refusal(rs.verifyRequest(request(`DPoP ${token}`, 'garbage')))).message).toBe('The DPoP proof is not a compact JWS.');
  });
});

describe('the scheme a token comes with', () => {
  it('refuses a DPoP-bound token presented as Bearer (what a thief with a copy would send), proof or not', async () => {
    const token = await bound();
    const message = 'the token is DPoP-bound: send it as Authorization: DPoP with a proof by its key';
    expect(await refusal(verifier().verifyRequest(request(`Bearer ${token}`)))).toEqual({ code: 'dpop', message });
    expect(await refusal(verifier().verifyRequest(request(`Bearer ${token}`, await proofFor(token))))).toEqual({ code: 'dpop', message });
  });

  it('refuses a DPoP-bound token given to verify() alone, which has no request to check a proof against', async () => {
    expect(await refusal(verifier().verify(await bound()))).toEqual({
      code: 'dpop',
      message: 'the token is DPoP-bound: verify it with the proof of its request (verifyRequest)',
    });
  });

  it('refuses a token without cnf presented with the DPoP scheme, even with a good proof', async () => {
    const token = await tokens.mint({}, clock());
    expect(await refusal(verifier().verifyRequest(request(`DPoP ${token}`, await proofFor(token))))).toEqual({
      code: 'dpop',
      message: 'the token is not DPoP-bound (no cnf.jkt): send it as Bearer',
    });
  });

  it('accepts an unbound token as Bearer, unless the resource server requires DPoP', async () => {
    const token = await tokens.mint({}, clock());
    expect(await verifier().verifyRequest(request(`Bearer ${token}`))).toMatchObject({ sub: 'repo:acme/app:ref:refs/heads/main' });
    expect(await verifier().verify(token)).toBeTruthy();
    expect(await refusal(verifier().verifyRequest(request(`Bearer ${token}`), { requireDpop: true }))).toEqual({
      code: 'dpop',
      message: 'this resource server takes DPoP-bound tokens only: Authorization: DPoP with a DPoP proof',
    });
  });

  it('says missing for no Authorization header, and invalid for one it cannot read', async () => {
    expect((await refusal(verifier().verifyRequest(request(undefined)))).code).toBe('missing');
    for (const header of ['Basic dXNlcjpwYXNz', 'Bearer', 'Bearer a b', 'DPoPtoken']) expect((await refusal(verifier().verifyRequest(request(header)))).code, header).toBe('invalid');
  });

  it('checks the token itself before its proof: a forged bound token is invalid', async () => {
    const token = await bound();
    const [header, payload] = token.split('.');
    const forged = `${header}.${payload}.${'A'.repeat(86)}`;
    expect((await refusal(verifier().verifyRequest(request(`DPoP ${forged}`, await proofFor(forged))))).code).toBe('invalid');
  });
});

describe('the replay cache', () => {
  it('is bounded: full of proofs still in their window, it refuses new ones (unavailable) rather than forget one; expired ones make room', async () => {
    const rs = verifier({ dpop: { replayCacheSize: 2 } });
    const token = await bound();
    await rs.verifyRequest(request(`DPoP ${token}`, await proofFor(token)));
    await rs.verifyRequest(request(`DPoP ${token}`, await proofFor(token)));
    expect(await refusal(rs.verifyRequest(request(`DPoP ${token}`, await proofFor(token))))).toEqual({
      code: 'unavailable',
      message: 'too many DPoP proofs to remember against replay; try again shortly',
    });
    clock.advance(31_000);
    const fresh = await tokens.mint({ cnf: { jkt } }, clock());
    expect(await rs.verifyRequest(request(`DPoP ${fresh}`, await proofFor(fresh)))).toBeTruthy();
    expect(await rs.verifyRequest(request(`DPoP ${fresh}`, await proofFor(fresh)))).toBeTruthy();
  });

  it('remembers only proofs that came with a token accepted on every other count: tokens refused here cannot fill it', async () => {
    const rs = verifier({ dpop: { replayCacheSize: 2 } });
    // A token of this audience that the resource server refuses (a scope it lacks, break-glass where
    // that is refused), sent with fresh proofs by its holder, over and over.
    const refused = await tokens.mint({ cnf: { jkt }, breakGlass: true }, clock());
    for (let i = 0; i < 5; i += 1) {
      expect((await refusal(rs.verifyRequest(request(`DPoP ${refused}`, await proofFor(refused)), { requiredScopes: ['artifacts:write'] }))).code).toBe('scope');
      expect((await refusal(rs.verifyRequest(request(`DPoP ${refused}`, await proofFor(refused)), { refuseBreakGlass: true }))).code).toBe('break_glass');
    }
    // The memory of proofs still has room for those of the tokens it accepts.
    const token = await bound();
    const proof = await proofFor(token);
    expect(await rs.verifyRequest(request(`DPoP ${token}`, proof), { requiredScopes: ['artifacts:read'] })).toBeTruthy();
    expect(await rs.verifyRequest(request(`DPoP ${token}`, await proofFor(token)), { requiredScopes: ['artifacts:read'] })).toBeTruthy();
    // And an accepted proof is still refused when it comes again.
    expect((await refusal(rs.verifyRequest(request(`DPoP ${token}`, proof), { requiredScopes: ['artifacts:read'] }))).message).toMatch(/used before/);
  });

  it('follows the configured proof window and algorithms', async () => {
    const token = await bound();
    const narrow = verifier({ dpop: { proofWindowSeconds: 5, algorithms: ['ES256'] } });
    expect((await refusal(narrow.verifyRequest(request(`DPoP ${token}`, await proofFor(token, { now: clock() - 6_000 }))))).message).toMatch(/more than 5 s ago/);
    const eddsaBound = await tokens.mint({ cnf: { jkt: await calculateJwkThumbprint(thief.publicJwk) } }, clock());
    expect((await refusal(narrow.verifyRequest(request(`DPoP ${eddsaBound}`, await proofFor(eddsaBound, { key: thief }))))).message).toBe(
      'The DPoP proof must be signed with one of ES256.',
    );
    expect(await verifier().verifyRequest(request(`DPoP ${eddsaBound}`, await proofFor(eddsaBound, { key: thief })))).toBeTruthy();
  });
});
