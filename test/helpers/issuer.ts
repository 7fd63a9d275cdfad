import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';

/** An identity issuer of the test's own: a real key pair, and optionally its JWKS served over HTTP. */
export interface TestIssuer {
  iss: string;
  alg: string;
  kid: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
  jwks: { keys: JWK[] };
  /** Signs `claims` as this issuer: iss, aud `jit-broker`, iat now, exp now + 5 min unless overridden. */
  token(sub: string | undefined, claims?: JWTPayload, options?: { now?: number; header?: Record<string, unknown>; key?: CryptoKey }): Promise<string>;
}

export async function createTestIssuer(iss: string, alg = 'ES256'): Promise<TestIssuer> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const exported = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(exported);
  const publicJwk = { ...exported, kid, alg, use: 'sig' };
  return {
    iss,
    alg,
    kid,
    privateKey,
    publicJwk,
    jwks: { keys: [publicJwk] },
    async token(sub, claims = {}, options = {}) {
      const now = Math.floor((options.now ?? Date.now()) / 1000);
      const payload: JWTPayload = { iss, aud: 'jit-broker', iat: now, exp: now + 300, ...(sub !== undefined ? { sub } : {}), ...claims };
      return new SignJWT(payload)
        .setProtectedHeader({ alg, kid, typ: 'JWT', ...options.header })
        .sign(options.key ?? privateKey);
    },
  };
}

/** Serves whatever `body()` returns at /jwks on a loopback port; counts the fetches. */
export interface JwksServer {
  url: string;
  fetches: number;
  close(): Promise<void>;
}

export async function serveJwks(body: () => unknown, options: { delayMs?: number } = {}): Promise<JwksServer> {
  const state = { fetches: 0 };
  const server: Server = createServer((req, res) => {
    state.fetches += 1;
    const respond = () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body()));
    };
    if (options.delayMs) setTimeout(respond, options.delayMs);
    else respond();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/jwks`,
    get fetches() {
      return state.fetches;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
