import { readFileSync, writeFileSync } from 'node:fs';
import { request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signDpopProof, type DpopSigningKey } from '../../src/dpop/index.js';
import { tempDir } from '../helpers/temp.js';
import { startTokenMint, type TokenMint } from '../helpers/minted.js';

/**
 * The README's express resource server (Checking a bound token, with this package), run as
 * written: the block is read from the README, pointed at this checkout's verifier and a JWKS the
 * test serves, and asked over HTTP. Resource servers copy it, so what it answers is tested here.
 */

const PUBLIC_URL = 'https://registry.acme.internal';

function readmeExample(): string {
  const readme = readFileSync('README.md', 'utf8');
  const section = readme.indexOf('**Checking a bound token, with this package.**');
  expect(section).toBeGreaterThan(0);
  const block = /```ts\n([\s\S]*?)```/.exec(readme.slice(section))?.[1];
  expect(block).toBeDefined();
  const replaceOnce = (text: string, from: string, to: string) => {
    expect(text.split(from).length, `the README example holds ${from} once`).toBe(2);
    return text.replace(from, to);
  };
  const require = createRequire(import.meta.url);
  let code = replaceOnce(block as string, "from 'jit-broker/verifier'", `from '${resolve('src/verifier/index.ts')}'`);
  code = replaceOnce(code, "from 'express'", `from '${require.resolve('express')}'`);
  code = replaceOnce(code, 'createBrokerVerifier({', 'createBrokerVerifier({ jwksUri: (globalThis as any).readmeJwksUri,');
  return replaceOnce(code, 'app.listen(8443);', "export const server = app.listen(0, '127.0.0.1');");
}

let tokens: TokenMint;
let server: Server;
let holder: DpopSigningKey;
let jkt: string;
beforeAll(async () => {
  tokens = await startTokenMint('https://broker.example.com');
  (globalThis as Record<string, unknown>).readmeJwksUri = tokens.jwksUri;
  const file = join(tempDir('readme-example-'), 'resource-server.ts');
  writeFileSync(file, readmeExample());
  ({ server } = (await import(/* @vite-ignore */ file)) as { server: Server });
  await new Promise<void>((ready) => (server.listening ? ready() : server.once('listening', ready)));
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  holder = { alg: 'ES256', privateKey, publicJwk: await exportJWK(publicKey) };
  jkt = await calculateJwkThumbprint(holder.publicJwk);
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((closed) => server.close(closed));
  await tokens.close();
});

/** A GET of `path` as written (fetch would resolve its dot segments), with `headers`. */
const ask = (path: string, headers: Record<string, string> = {}) =>
  new Promise<{ status: number | undefined; challenge: string | null; body: string }>((answered, failed) => {
    const { port } = server.address() as AddressInfo;
    request({ host: '127.0.0.1', port, path, headers }, (response) => {
      let body = '';
      response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      response.on('end', () => answered({ status: response.statusCode, challenge: response.headers['www-authenticate'] ?? null, body }));
    })
      .on('error', failed)
      .end();
  });
const proof = (token: string, url = `${PUBLIC_URL}/artifacts`) => signDpopProof(holder, { method: 'GET', url, accessToken: token });

describe("the README's express resource server", () => {
  it('serves a bound token with the proof of its request, whatever Host the client sends', async () => {
    const token = await tokens.mint({ cnf: { jkt } });
    expect(await ask('/artifacts', { authorization: `DPoP ${token}`, dpop: await proof(token), host: 'evil.example' })).toEqual({
      status: 200,
      challenge: null,
      body: JSON.stringify({ for: 'repo:acme/app:ref:refs/heads/main' }),
    });
  });

  it('asks for a DPoP token, without an error code, when none came (RFC 6750 section 3.1, RFC 9449 section 7.1)', async () => {
    expect(await ask('/artifacts')).toMatchObject({ status: 401, challenge: 'DPoP algs="ES256 EdDSA"' });
  });

  it('answers 403 insufficient_scope to a good token that lacks the scope, not 401 invalid_token', async () => {
    const token = await tokens.mint({ cnf: { jkt }, scopes: ['logs:read'] });
    expect(await ask('/artifacts', { authorization: `DPoP ${token}`, dpop: await proof(token) })).toMatchObject({
      status: 403,
      challenge: 'DPoP error="insufficient_scope", algs="ES256 EdDSA"',
    });
  });

  it('refuses a bad proof, a bad token and a Bearer one with 401 and the DPoP challenge', async () => {
    const token = await tokens.mint({ cnf: { jkt } });
    const invalidProof = 'DPoP error="invalid_dpop_proof", algs="ES256 EdDSA"';
    expect(await ask('/artifacts', { authorization: `DPoP ${token}`, dpop: await proof(token, `${PUBLIC_URL}/other`) })).toMatchObject({ status: 401, challenge: invalidProof });
    expect(await ask('/admin/../artifacts', { authorization: `DPoP ${token}`, dpop: await proof(token) })).toMatchObject({ status: 401, challenge: invalidProof });
    expect(await ask('/artifacts', { authorization: `Bearer ${token}` })).toMatchObject({ status: 401, challenge: invalidProof });
    const forged = `${token.slice(0, token.lastIndexOf('.'))}.${'A'.repeat(86)}`;
    expect(await ask('/artifacts', { authorization: `DPoP ${forged}`, dpop: await proof(forged) })).toMatchObject({ status: 401, challenge: 'DPoP error="invalid_token", algs="ES256 EdDSA"' });
  });
});
