import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { auth } from 'express-oauth2-jwt-bearer';
import { createVerifier } from 'fast-jwt';
import { createRemoteJWKSet, customFetch, decodeProtectedHeader, jwtVerify, type FetchImplementation } from 'jose';
import jwt from 'jsonwebtoken';
import { JwksClient } from 'jwks-rsa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, testClock } from '../helpers/broker.js';
import { signing, startServedBroker, type ServedBroker } from './served-broker.js';

/**
 * Resource servers built with JWT libraries nobody here wrote verify the broker's tokens against
 * its JWKS, with a clock 2 s behind the broker's and no leeway (the broker backdates `nbf`).
 * jsonwebtoken cannot verify EdDSA at all: the README says so, and the last test shows it.
 */

const AUDIENCE = 'registry.acme.internal';
const LAG_MS = 2_000;

describe.each(['ES256', 'RS256', 'EdDSA'] as const)('a broker signing with %s', (algorithm) => {
  let served: ServedBroker;
  let jwksUri: string;
  beforeAll(async () => {
    // The broker's clock runs LAG_MS ahead of this process's, which is every resource server's.
    served = await startServedBroker({ clock: testClock(Date.now() + LAG_MS), configure: signing({ algorithm }) });
    jwksUri = `${served.url}/.well-known/jwks.json`;
  });
  afterAll(async () => {
    await served.close();
  });

  const issue = async (audience = AUDIENCE) => {
    const response = await served.t.http
      .post('/v1/credentials')
      .set(bearer(await served.t.as.pipeline()))
      .send({ task_id: 'build-1', scopes: ['artifacts:read'], audience });
    expect(response.status).toBe(201);
    const token = response.body.access_token as string;
    expect(decodeProtectedHeader(token).alg).toBe(algorithm);
    return token;
  };
  /** The resource servers' clock: the broker's less LAG_MS. */
  const lagging = () => served.t.clock() - LAG_MS;

  it('jose createRemoteJWKSet verifies it as an RFC 9068 token', async () => {
    const keys = createRemoteJWKSet(new URL(jwksUri));
    const { payload } = await jwtVerify(await issue(), keys, {
      issuer: served.url,
      audience: AUDIENCE,
      typ: 'at+jwt',
      algorithms: [algorithm],
      currentDate: new Date(lagging()),
      clockTolerance: 0,
    });
    expect(payload).toMatchObject({ scope: 'artifacts:read', client_id: 'ci' });
    await expect(jwtVerify(await issue('elsewhere'), keys, { issuer: served.url, audience: AUDIENCE, currentDate: new Date(lagging()) })).rejects.toThrow(/aud/);
  });

  it('fast-jwt with jwks-rsa verifies it', async () => {
    const keys = new JwksClient({ jwksUri });
    const verify = createVerifier({
      key: async (decoded: { header: Record<string, unknown> }) => (await keys.getSigningKey(decoded.header.kid as string)).getPublicKey(),
      algorithms: [algorithm],
      allowedIss: served.url,
      allowedAud: AUDIENCE,
      checkTyp: 'at+jwt',
      requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'client_id'],
      clockTimestamp: lagging(),
      clockTolerance: 0,
    });
    expect(await verify(await issue())).toMatchObject({ scope: 'artifacts:read' });
    await expect(verify(await issue('elsewhere'))).rejects.toThrow(/aud/);
  });

  it('express-oauth2-jwt-bearer finds it through discovery and accepts it in strict RFC 9068 mode', async () => {
    const app = express();
    app.use(auth({ issuerBaseURL: served.url, audience: AUDIENCE, strict: true, clockTolerance: 0 }));
    app.get('/artifacts', (req, res) => {
      res.json({ sub: req.auth?.payload.sub, scope: req.auth?.payload.scope });
    });
    app.use(((error, _req, res, _next) => {
      res.status((error as { status?: number }).status ?? 500).json({ error: (error as Error).message });
    }) as express.ErrorRequestHandler);
    const server = createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/artifacts`;
    try {
      // This library reads the process clock: the broker's runs LAG_MS ahead of it.
      served.t.clock.set(Date.now() + LAG_MS);
      const ok = await fetch(url, { headers: bearer(await issue()) });
      expect(ok.status, await ok.clone().text()).toBe(200);
      expect(await ok.json()).toEqual({ sub: 'repo:acme/app:ref:refs/heads/main', scope: 'artifacts:read' });
      expect((await fetch(url, { headers: bearer(await issue('elsewhere')) })).status).toBe(401);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it.runIf(algorithm !== 'EdDSA')('jsonwebtoken with jwks-rsa verifies it', async () => {
    const keys = new JwksClient({ jwksUri });
    const verify = (token: string) =>
      new Promise<jwt.JwtPayload>((resolve, reject) =>
        jwt.verify(
          token,
          (header, callback) => void keys.getSigningKey(header.kid).then((key) => callback(null, key.getPublicKey()), callback),
          { issuer: served.url, audience: AUDIENCE, algorithms: [algorithm as jwt.Algorithm], clockTimestamp: Math.floor(lagging() / 1000), clockTolerance: 0 },
          (error: jwt.VerifyErrors | null, payload?: unknown) => (error ? reject(error) : resolve(payload as jwt.JwtPayload)),
        ),
      );
    expect(await verify(await issue())).toMatchObject({ scope: 'artifacts:read' });
    await expect(verify(await issue('elsewhere'))).rejects.toThrow(/audience/);
  });

  it.runIf(algorithm === 'EdDSA')('jsonwebtoken cannot verify it: it knows no EdDSA (use jose, fast-jwt or express-oauth2-jwt-bearer)', async () => {
    const token = await issue();
    const key = (await new JwksClient({ jwksUri }).getSigningKey(decodeProtectedHeader(token).kid)).getPublicKey();
    // The right key and a good token: refused all the same, whatever it is told to accept.
    for (const algorithms of [undefined, ['EdDSA' as jwt.Algorithm]]) {
      expect(() => jwt.verify(token, key, { ...(algorithms ? { algorithms } : {}), clockTimestamp: Math.floor(lagging() / 1000) + 60 })).toThrow(
        /unknown key type "ed25519"|invalid algorithm/i,
      );
    }
  });
});

describe('a resource server that cached the JWKS a moment before a rotation (jose createRemoteJWKSet)', () => {
  it('verifies every token issued across the rotation without fetching again', async () => {
    const served = await startServedBroker({ configure: signing({ rotateEvery: '10m', publishAhead: '2m' }) });
    try {
      const { t } = served;
      let fetches = 0;
      const keys = createRemoteJWKSet(new URL(`${served.url}/.well-known/jwks.json`), {
        [customFetch]: ((...args: Parameters<typeof fetch>) => {
          fetches += 1;
          return fetch(...args);
        }) as FetchImplementation,
      });
      const verify = (token: string) => jwtVerify(token, keys, { issuer: served.url, audience: AUDIENCE, typ: 'at+jwt', currentDate: new Date(t.clock()) });
      const issue = async () =>
        (await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ task_id: 'b', scopes: ['artifacts:read'], audience: AUDIENCE })).body
          .access_token as string;

      const start = t.clock();
      t.clock.set(start + 8 * 60_000);
      await t.broker.scheduler.runAll(); // the next key is published now and signs from 10 minutes
      t.clock.set(start + 10 * 60_000 - 1_000);
      const tokens = [await issue()];
      await verify(tokens[0] as string); // the resource server fetches the JWKS here, once
      for (const at of [10 * 60_000, 10 * 60_000 + 30_000, 11 * 60_000]) {
        t.clock.set(start + at);
        await t.broker.scheduler.runAll();
        tokens.push(await issue());
      }
      const kids = tokens.map((token) => decodeProtectedHeader(token).kid);
      expect(new Set(kids).size).toBe(2); // both sides of the rotation
      for (const token of tokens) await expect(verify(token)).resolves.toBeTruthy();
      expect(fetches).toBe(1); // the cached copy: jose's cooldown keeps it from refetching on an unknown kid
    } finally {
      await served.close();
    }
  });
});
