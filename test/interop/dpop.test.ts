import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { auth } from 'express-oauth2-jwt-bearer';
import { calculateJwkThumbprint, createRemoteJWKSet, exportJWK, generateKeyPair, jwtVerify, SignJWT, type CryptoKey, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signDpopProof } from '../../src/dpop/index.js';
import { actorChain, createBrokerVerifier } from '../../src/verifier/index.js';
import { AUDIENCE, startTokenMint, type TokenMint } from '../helpers/minted.js';

/**
 * The broker's DPoP-bound and delegated tokens in libraries nobody here wrote: Auth0's
 * express-oauth2-jwt-bearer, told to require DPoP, takes a bound token with a proof the test
 * makes with jose (or with the CLI's signer) and refuses it as a plain Bearer token; jose's
 * jwtVerify reads the same `act` chain this package's verifier does.
 */

let tokens: TokenMint;
let server: Server;
let url: string;
let key: { privateKey: CryptoKey; publicJwk: JWK; jkt: string };

beforeAll(async () => {
  tokens = await startTokenMint();
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const publicJwk = await exportJWK(publicKey);
  key = { privateKey, publicJwk, jkt: await calculateJwkThumbprint(publicJwk) };

  const app = express();
  app.use(auth({ issuer: tokens.issuer, jwksUri: tokens.jwksUri, audience: AUDIENCE, strict: true, dpop: { enabled: true, required: true } }));
  app.get('/artifacts', (req, res) => {
    res.json({ sub: req.auth?.payload.sub, cnf: req.auth?.payload.cnf });
  });
  app.use(((error, _req, res, _next) => {
    const { status, headers } = error as { status?: number; headers?: Record<string, string> };
    res.status(status ?? 500).set(headers ?? {}).json({ error: (error as Error).message });
  }) as express.ErrorRequestHandler);
  server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/artifacts`;
});
afterAll(async () => {
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  await tokens?.close();
});

/** A proof as any client makes one: jose, nothing of this repository. */
const joseProof = async (accessToken: string, method = 'GET', htu = url) => {
  const ath = Buffer.from(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(accessToken))).toString('base64url');
  return new SignJWT({ jti: crypto.randomUUID(), htm: method, htu, iat: Math.floor(Date.now() / 1000), ath })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: key.publicJwk })
    .sign(key.privateKey);
};

describe('express-oauth2-jwt-bearer requiring DPoP', () => {
  it('accepts a bound broker token with a fresh proof made with jose, or by the CLI\'s signer', async () => {
    const token = await tokens.mint({ cnf: { jkt: key.jkt } });
    const ok = await fetch(url, { headers: { authorization: `DPoP ${token}`, dpop: await joseProof(token) } });
    expect(ok.status, await ok.clone().text()).toBe(200);
    expect(await ok.json()).toEqual({ sub: 'repo:acme/app:ref:refs/heads/main', cnf: { jkt: key.jkt } });

    const signed = await signDpopProof({ alg: 'ES256', privateKey: key.privateKey, publicJwk: key.publicJwk }, { method: 'GET', url, accessToken: token });
    expect((await fetch(url, { headers: { authorization: `DPoP ${token}`, dpop: signed } })).status).toBe(200);
  });

  it('refuses it as a plain Bearer token, and with a proof for another request or by another key', async () => {
    const token = await tokens.mint({ cnf: { jkt: key.jkt } });
    const refused = async (headers: Record<string, string>) => {
      const response = await fetch(url, { headers });
      return { status: response.status, challenge: response.headers.get('www-authenticate') };
    };
    // The library's challenge for a request that should have used DPoP: `DPoP algs="..."`.
    expect(await refused({ authorization: `Bearer ${token}` })).toEqual({ status: 400, challenge: expect.stringMatching(/^DPoP /) });

    const badProof = { status: 400, challenge: expect.stringContaining('error="invalid_dpop_proof"') };
    expect(await refused({ authorization: `DPoP ${token}`, dpop: await joseProof(token, 'POST') })).toEqual(badProof);
    expect(await refused({ authorization: `DPoP ${token}`, dpop: await joseProof(token, 'GET', `${url}/other`) })).toEqual(badProof);

    // A thief with a copy of the token and a key of its own: the proof is good, the binding is not.
    const thief = await generateKeyPair('ES256');
    const ath = Buffer.from(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(token))).toString('base64url');
    const foreign = await new SignJWT({ jti: crypto.randomUUID(), htm: 'GET', htu: url, iat: Math.floor(Date.now() / 1000), ath })
      .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: await exportJWK(thief.publicKey) })
      .sign(thief.privateKey);
    expect(await refused({ authorization: `DPoP ${token}`, dpop: foreign })).toEqual({ status: 401, challenge: expect.stringContaining('error="invalid_token"') });
  });
});

describe('the act chain of a delegated token', () => {
  it('reads the same through jose\'s jwtVerify and through this package\'s verifier', async () => {
    const act = { iss: 'https://agents.acme.org', sub: 'agent-2', act: { iss: 'https://agents.acme.org', sub: 'agent-1' } };
    const token = await tokens.mint({ sub: 'bob', act });
    const { payload } = await jwtVerify(token, createRemoteJWKSet(new URL(tokens.jwksUri)), { issuer: tokens.issuer, audience: AUDIENCE, typ: 'at+jwt' });
    const claims = await createBrokerVerifier({ issuer: tokens.issuer, audience: AUDIENCE, jwksUri: tokens.jwksUri }).verify(token, { delegation: 'required' });
    const chain = [
      { iss: 'https://agents.acme.org', sub: 'agent-2' },
      { iss: 'https://agents.acme.org', sub: 'agent-1' },
    ];
    expect(actorChain(payload)).toEqual(chain);
    expect(actorChain(claims)).toEqual(chain);
    expect(payload.act).toEqual(act);
  });
});
