import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createTestIssuer, type TestIssuer } from '../helpers/issuer.js';

/**
 * GitHub Actions' OIDC token endpoint, as a job sees it: ACTIONS_ID_TOKEN_REQUEST_URL (with its
 * api-version query) answers `{value}` to a GET bearing ACTIONS_ID_TOKEN_REQUEST_TOKEN, a token
 * signed by the test's own key with the `audience` asked for and the job's claims.
 */
export interface FakeActions {
  issuer: TestIssuer;
  env: { ACTIONS_ID_TOKEN_REQUEST_URL: string; ACTIONS_ID_TOKEN_REQUEST_TOKEN: string };
  /** The job's claims; a test may change them between calls. */
  claims: Record<string, unknown>;
  /** Every audience asked for, and every token handed out. */
  audiences: (string | null)[];
  tokens: string[];
  /** The broker's issuer entry trusting these tokens. */
  issuerConfig(): Record<string, unknown>;
  close(): Promise<void>;
}

export const GITHUB_ISSUER = 'https://token.actions.githubusercontent.com';

export async function startFakeActions(claims: Record<string, unknown> = {}): Promise<FakeActions> {
  const issuer = await createTestIssuer(GITHUB_ISSUER);
  const requestToken = randomBytes(24).toString('base64url');
  const state: Pick<FakeActions, 'claims' | 'audiences' | 'tokens'> = {
    claims: {
      sub: 'repo:acme/app:ref:refs/heads/main',
      repository: 'acme/app',
      ref: 'refs/heads/main',
      actor: 'octo-dev',
      run_id: '9120331',
      run_attempt: '1',
      ...claims,
    },
    audiences: [],
    tokens: [],
  };
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname !== '/_apis/token' || url.searchParams.get('api-version') !== '2.0' || req.headers.authorization !== `Bearer ${requestToken}`) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"message":"unauthorized"}');
      return;
    }
    const audience = url.searchParams.get('audience');
    state.audiences.push(audience);
    const { sub, ...rest } = state.claims;
    void issuer.token(sub as string, { ...rest, aud: audience ?? 'https://github.com/acme' }).then((token) => {
      state.tokens.push(token);
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ count: 1800, value: token }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(state, {
    issuer,
    env: {
      ACTIONS_ID_TOKEN_REQUEST_URL: `http://127.0.0.1:${port}/_apis/token?api-version=2.0`,
      ACTIONS_ID_TOKEN_REQUEST_TOKEN: requestToken,
    },
    issuerConfig: () => ({
      name: 'github',
      kind: 'workload',
      issuer: GITHUB_ISSUER,
      jwks: issuer.jwks,
      audiences: ['jit-broker'],
      algorithms: ['ES256'],
      requiredClaims: ['repository'],
      initiatorClaim: 'actor',
      bindClaims: ['run_id', 'run_attempt'],
    }),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
}
