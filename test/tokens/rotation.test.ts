import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBrokerVerifier } from '../../src/verifier/index.js';
import { BROKER_ISSUER, bearer, listen, startTestBroker, type TestBroker } from '../helpers/broker.js';

/**
 * CONTRACT section 3 across several rotations: every token the broker hands out verifies against
 * a JWKS copy that a resource server fetched earlier and kept exactly as long as the broker's
 * Cache-Control allows, never refreshing it on an unknown kid. The exported verifier does the
 * same with its own cache, with its unknown-kid refetch switched off so it cannot hide a gap.
 */

const SECOND = 1_000;
const MINUTE = 60 * SECOND;
const STEP = 20 * SECOND;

let t: TestBroker;
let server: Awaited<ReturnType<typeof listen>>;
beforeAll(async () => {
  t = await startTestBroker({
    configure: (c) => Object.assign(c.signing as Record<string, unknown>, { rotateEvery: '10m', publishAhead: '2m' }),
  });
  server = await listen(t);
});
afterAll(async () => {
  await server.close();
  await t.close();
});

const issue = async () =>
  (
    await t.http
      .post('/v1/credentials')
      .set(bearer(await t.as.pipeline()))
      .send({ task_id: 'build-1', scopes: ['artifacts:read'], audience: 'registry.acme.internal', ttl_seconds: 60 })
  ).body.access_token as string;

/** A resource server's cache that obeys max-age and nothing else. */
function cachingResourceServer() {
  let copy: { keys: JSONWebKeySet; fetchedAt: number; maxAgeMs: number } | undefined;
  return {
    fetches: 0,
    async keys(now: number) {
      if (!copy || now - copy.fetchedAt >= copy.maxAgeMs) {
        const response = await t.http.get('/.well-known/jwks.json');
        const maxAge = Number(/max-age=(\d+)/.exec(response.headers['cache-control'] ?? '')?.[1]);
        copy = { keys: response.body as JSONWebKeySet, fetchedAt: now, maxAgeMs: maxAge * SECOND };
        this.fetches += 1;
      }
      return copy.keys;
    },
  };
}

describe('key rotation seen from resource servers', () => {
  it('never signs with a key a JWKS cache within its max-age lacks, and the exported verifier agrees', async () => {
    const start = t.clock();
    const cache = cachingResourceServer();
    const verifier = createBrokerVerifier({
      issuer: BROKER_ISSUER,
      brokerUrl: server.url,
      audience: 'registry.acme.internal',
      now: () => t.clock(),
      jwksCooldownMs: Number.POSITIVE_INFINITY,
    });
    await verifier.verify(await issue()); // the verifier's copy, fetched at the start

    const signers: string[] = [];
    for (let at = start; at <= start + 35 * MINUTE; at += STEP) {
      t.clock.set(at);
      const keys = await cache.keys(at); // the copy as it stands before this token exists
      await t.broker.scheduler.runAll();
      const token = await issue();
      const kid = decodeProtectedHeader(token).kid as string;
      if (signers.at(-1) !== kid) signers.push(kid);
      await expect(
        jwtVerify(token, createLocalJWKSet(keys), { issuer: BROKER_ISSUER, audience: 'registry.acme.internal', currentDate: new Date(at) }),
        `token signed by ${kid} at +${(at - start) / MINUTE} min`,
      ).resolves.toBeTruthy();
      await expect(verifier.verify(token), `the verifier at +${(at - start) / MINUTE} min`).resolves.toMatchObject({ scope: 'artifacts:read' });
    }
    expect(signers).toHaveLength(4); // three rotations: at 10, 20 and 30 minutes
    expect(new Set(signers).size).toBe(4);
    expect(cache.fetches).toBeLessThanOrEqual(36); // once per max-age (60 s) at most, not per token
  });

  it('says max-age at most half of publishAhead', async () => {
    const response = await t.http.get('/.well-known/jwks.json');
    expect(response.headers['cache-control']).toBe('public, max-age=60');
  });

  it('says max-age 0 when half of publishAhead is under a second, never rounding up past it', async () => {
    const short = await startTestBroker({
      configure: (c) => Object.assign(c.signing as Record<string, unknown>, { rotateEvery: '10m', publishAhead: '1s' }),
    });
    try {
      expect((await short.http.get('/.well-known/jwks.json')).headers['cache-control']).toBe('public, max-age=0');
    } finally {
      await short.close();
    }
  });
});
