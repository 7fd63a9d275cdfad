import { generateKeyPairSync } from 'node:crypto';
import { calculateJwkThumbprint, type JWK } from 'jose';
import { mintAccessToken, type AccessTokenGrant } from '../../src/tokens/mint.js';
import { serveJwks, type JwksServer } from './issuer.js';

/**
 * Broker access tokens minted by the broker's own mint function with a key of the test's, and
 * that key's JWKS served on a loopback port: a resource server's view of the broker, without one.
 */
export interface TokenMint {
  issuer: string;
  jwksUri: string;
  /** A token for `registry.acme.internal` (scope `artifacts:read`, 5 minutes), `grant` changing any of it. */
  mint(grant?: Partial<AccessTokenGrant>, now?: number): Promise<string>;
  close(): Promise<void>;
}

export const AUDIENCE = 'registry.acme.internal';

export async function startTokenMint(issuer = 'https://broker.example'): Promise<TokenMint> {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const exported = publicKey.export({ format: 'jwk' }) as JWK;
  const kid = await calculateJwkThumbprint(exported);
  const jwks: JwksServer = await serveJwks(() => ({ keys: [{ ...exported, kid, alg: 'ES256', use: 'sig' }] }));
  const keyring = { signingKey: async () => ({ kid, alg: 'ES256', privateKey }) };
  return {
    issuer,
    jwksUri: jwks.url,
    async mint(grant = {}, now = Date.now()) {
      const minted = await mintAccessToken(
        keyring,
        issuer,
        {
          sub: 'repo:acme/app:ref:refs/heads/main',
          aud: AUDIENCE,
          idp: 'ci',
          scopes: ['artifacts:read'],
          taskId: 'build-1',
          requestId: 'request-1',
          approvers: [],
          breakGlass: false,
          ttlSeconds: 300,
          ...grant,
        },
        now,
        { clockSkewMs: 30_000 },
      );
      return minted.token;
    },
    close: () => jwks.close(),
  };
}
