import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IssuerConfig } from '../../src/config/index.js';
import { claimedTrustDomain, findIssuer, issuerRoutes, jwtSvidKeySet, parseSpiffeId } from '../../src/identity/index.js';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { createTestIssuer, type TestIssuer } from '../helpers/issuer.js';

/** CONTRACT section 1, "Issuer shapes": SPIFFE trust domains and their JWT-SVIDs. */

describe('SPIFFE IDs', () => {
  it('reads a well-formed workload SPIFFE ID', () => {
    expect(parseSpiffeId('spiffe://example.org/ns/prod/sa/deployer')).toEqual({ trustDomain: 'example.org', path: '/ns/prod/sa/deployer' });
    expect(parseSpiffeId('spiffe://a-b_c.9/x.y-z_0')).toEqual({ trustDomain: 'a-b_c.9', path: '/x.y-z_0' });
  });

  it('refuses every malformed one', () => {
    const malformed = [
      'spiffe://example.org', // a trust domain, not a workload
      'spiffe://example.org/',
      'spiffe://Example.org/x',
      'SPIFFE://example.org/x',
      'spiffe://example.org/x/',
      'spiffe://example.org//x',
      'spiffe://example.org/./x',
      'spiffe://example.org/a/../x',
      'spiffe://example.org/%41',
      'spiffe://example.org/x?y=1',
      'spiffe://example.org/x#y',
      'spiffe://user@example.org/x',
      'spiffe://example.org:443/x',
      'spiffe:///x',
      'spiffe://exa mple.org/x',
      'spiffe://example.org/x y',
      'spiffe://example.org/é',
      `spiffe://example.org/${'x'.repeat(2048)}`,
      'https://example.org/x',
    ];
    for (const id of malformed) expect(parseSpiffeId(id), id).toBeUndefined();
  });

  it('reads the trust domain a sub claims leniently, so that other spellings reach the issuer that refuses them', () => {
    expect(claimedTrustDomain('spiffe://example.org/x')).toBe('example.org');
    expect(claimedTrustDomain('SPIFFE://EXAMPLE.org/x')).toBe('example.org');
    expect(claimedTrustDomain('spiffe://user@Example.org:8443/x?y')).toBe('example.org');
    expect(claimedTrustDomain('spiffe://example.org')).toBe('example.org');
    expect(claimedTrustDomain('repo:acme/app')).toBeUndefined();
    expect(claimedTrustDomain('https://example.org/x')).toBeUndefined();
  });

  it('takes jwt-svid keys of a trust bundle as signing keys, and drops the X.509 roots', () => {
    const bundle = {
      keys: [
        { kty: 'EC', kid: 'a', use: 'jwt-svid' },
        { kty: 'EC', kid: 'b', use: 'x509-svid' },
        { kty: 'EC', kid: 'c', use: 'enc' },
        { kty: 'EC', kid: 'd', use: 'sig' },
        { kty: 'EC', kid: 'e' },
      ],
    };
    expect(jwtSvidKeySet(bundle).keys).toEqual([
      { kty: 'EC', kid: 'a', use: 'sig' },
      { kty: 'EC', kid: 'd', use: 'sig' },
      { kty: 'EC', kid: 'e' },
    ]);
  });
});

describe('routing a token to its issuer, on its claims alone', () => {
  // Only the fields routing reads: no keys are needed to route, so `jit policy test` routes a case's claims the same way.
  const issuer = (config: Partial<IssuerConfig>) => ({ config: config as IssuerConfig });
  const ci = issuer({ name: 'ci', issuer: 'https://ci.test' });
  const spire = issuer({ name: 'spire', spiffeTrustDomain: 'example.org' });
  const spireNet = issuer({ name: 'spire-net', spiffeTrustDomain: 'prod.example.net', issuer: 'https://spire.example.net' });
  const routes = issuerRoutes([ci, spire, spireNet]);
  const rejection = (claims: Record<string, unknown>) => {
    try {
      findIssuer(routes, claims);
    } catch (error) {
      return (error as { rejection?: string }).rejection;
    }
    return undefined;
  };

  it('goes by a SPIFFE ID\'s trust domain, else by the exact iss', () => {
    expect(findIssuer(routes, { sub: 'spiffe://example.org/ns/prod/x' })).toBe(spire);
    expect(findIssuer(routes, { sub: 'spiffe://prod.example.net/x', iss: 'https://spire.example.net' })).toBe(spireNet);
    expect(findIssuer(routes, { sub: 'repo:acme/app', iss: 'https://ci.test' })).toBe(ci);
  });

  it('refuses a malformed SPIFFE ID of a configured trust domain, an iss its SPIFFE issuer lacks, and an unknown iss', () => {
    for (const sub of ['spiffe://example.org/ns/prod/../../admin', 'spiffe://example.org/ns/prod/x/', 'spiffe://example.org/ns/prod/x y', 'spiffe://EXAMPLE.org/x']) {
      expect(rejection({ sub }), sub).toBe('invalid_claim');
    }
    expect(rejection({ sub: 'spiffe://example.org/x', iss: 'https://ci.test' })).toBe('unknown_issuer');
    expect(rejection({ sub: 'x', iss: 'https://ci.test/' })).toBe('unknown_issuer');
  });
});

describe('JWT-SVIDs through the app', () => {
  let t: TestBroker;
  /** Trust domain example.org, no `issuer`; its bundle also holds an X.509 root. */
  let spire: TestIssuer;
  let x509Root: TestIssuer;
  /** Trust domain prod.example.net, with an `issuer`. */
  let spireIss: TestIssuer;
  const body = { task_id: 'svid-1', scopes: ['artifacts:read'], audience: 'registry.acme.internal' };
  const workload = 'spiffe://example.org/ns/prod/sa/deployer';

  beforeAll(async () => {
    spire = await createTestIssuer('unused');
    x509Root = await createTestIssuer('unused');
    spireIss = await createTestIssuer('https://spire.example.net');
    t = await startTestBroker({
      configure(config) {
        const issuers = (config.identity as { issuers: unknown[] }).issuers;
        issuers.push(
          {
            name: 'spire',
            kind: 'workload',
            spiffeTrustDomain: 'example.org',
            jwks: { keys: [{ ...spire.publicJwk, use: 'jwt-svid' }, { ...x509Root.publicJwk, use: 'x509-svid' }] },
            audiences: ['jit-broker'],
            algorithms: ['ES256'],
          },
          {
            name: 'spire-net',
            kind: 'workload',
            spiffeTrustDomain: 'prod.example.net',
            issuer: 'https://spire.example.net',
            jwks: { keys: [{ ...spireIss.publicJwk, use: 'jwt-svid' }] },
            audiences: ['jit-broker'],
            algorithms: ['ES256'],
          },
        );
        (config.policies as unknown[]).push(
          { id: 'svid', match: { issuer: 'spire', subject: 'spiffe://example.org/ns/prod/*' }, scopes: ['artifacts:read'] },
          { id: 'svid-net', match: { issuer: 'spire-net', subject: 'spiffe://prod.example.net/*' }, scopes: ['artifacts:read'] },
        );
      },
    });
  });
  afterAll(async () => {
    await t.close();
  });

  const svid = (signer: TestIssuer, sub: string, claims: Record<string, unknown> = {}, options: { header?: Record<string, unknown> } = {}) =>
    signer.token(sub, { iss: undefined, ...claims }, { now: t.clock(), ...options });
  const ask = (token: string) => t.http.post('/v1/credentials').set(bearer(token)).send(body);
  function lastRejection(): string | undefined {
    const line = [...t.logs].reverse().find((l) => l.includes('"rejection"'));
    return line ? (JSON.parse(line) as { rejection: string }).rejection : undefined;
  }
  async function expectRefused(token: string, rejection: string) {
    const response = await ask(token);
    expect(response.status).toBe(401);
    expect(response.headers['www-authenticate']).toBe('Bearer error="invalid_token"');
    expect(lastRejection()).toBe(rejection);
  }

  it('routes a JWT-SVID without iss by its sub, and shows iss as spiffe://<trust domain>', async () => {
    const issued = await ask(await svid(spire, workload));
    expect(issued.status).toBe(201);
    const view = await t.http.get(`/v1/credentials/${issued.body.request_id}`).set(bearer(await svid(spire, workload)));
    expect(view.body.requester).toEqual({ iss: 'spiffe://example.org', sub: workload });
  });

  it('takes iss when it is the configured issuer, and shows that issuer', async () => {
    const sub = 'spiffe://prod.example.net/deployer';
    for (const claims of [{}, { iss: 'https://spire.example.net' }]) {
      const issued = await ask(await svid(spireIss, sub, claims));
      expect(issued.status).toBe(201);
      const view = await t.http.get(`/v1/credentials/${issued.body.request_id}`).set(bearer(await svid(spireIss, sub)));
      expect(view.body.requester).toEqual({ iss: 'https://spire.example.net', sub });
    }
  });

  it('refuses a JWT-SVID carrying an iss its issuer does not have', async () => {
    // No `issuer` configured: any iss is refused, even the one the identity is shown with.
    for (const iss of ['spiffe://example.org', 'https://spire.example.org', 'https://ci.test']) {
      await expectRefused(await svid(spire, workload, { iss }), 'unknown_issuer');
    }
    await expectRefused(await svid(spire, workload, { iss: null }), 'unknown_issuer');
    // With one: only it, exactly.
    for (const iss of ['https://spire.example.net/', 'HTTPS://spire.example.net', 'https://ci.test']) {
      await expectRefused(await svid(spireIss, 'spiffe://prod.example.net/deployer', { iss }), 'unknown_issuer');
    }
  });

  it('refuses a malformed SPIFFE ID in a configured trust domain, in whatever spelling', async () => {
    for (const sub of [
      'spiffe://EXAMPLE.org/ns/prod/sa/deployer',
      'SPIFFE://example.org/ns/prod/sa/deployer',
      'spiffe://example.org',
      'spiffe://example.org/ns/prod/../admin',
      'spiffe://example.org/ns/prod/sa/deployer/',
      'spiffe://admin@example.org/ns/prod/sa/deployer',
      'spiffe://example.org:443/ns/prod/sa/deployer',
    ]) {
      await expectRefused(await svid(spire, sub), 'invalid_claim');
    }
  });

  it('refuses another issuer\'s token that names a SPIFFE ID of the trust domain', async () => {
    // The attacker holds a CI token whose sub it could shape like a SPIFFE workload's.
    await expectRefused(await t.issuers.ci.token(workload, { repository: 'acme/app', actor: 'octocat' }, { now: t.clock() }), 'unknown_issuer');
    // Without iss it is routed to the trust domain, and CI's key does not verify there.
    await expectRefused(await svid(t.issuers.ci, workload), 'unknown_key');
    // One trust domain's key never signs for another.
    await expectRefused(await svid(spireIss, workload), 'unknown_key');
  });

  it('refuses a token at a SPIFFE issuer\'s iss whose sub is not a SPIFFE ID of its trust domain', async () => {
    for (const sub of ['deployer', 'spiffe://example.org/ns/prod/sa/deployer', 'spiffe://other.example/x']) {
      const token = await spireIss.token(sub, {}, { now: t.clock() });
      const response = await ask(token);
      expect(response.status).toBe(401);
    }
    // A trust domain nobody configured, and no iss: no issuer at all.
    await expectRefused(await svid(spire, 'spiffe://other.example/x'), 'unknown_issuer');
  });

  it('never verifies with a key the bundle marks for X.509 SVIDs', async () => {
    await expectRefused(await svid(x509Root, workload), 'unknown_key');
  });

  it('leaves the issuers routed by iss as they were', async () => {
    expect((await ask(await t.as.pipeline())).status).toBe(201);
  });
});
