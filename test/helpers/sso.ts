import { generateKeyPairSync } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
// @ts-expect-error oidc-provider ships no types; the test uses a small, stable part of it.
import Provider from 'oidc-provider';

/**
 * A real OpenID provider as the company SSO: panva's oidc-provider on a loopback port, with its
 * development login form (any login, any password) and the accounts the test names. ID tokens
 * are ES256, carry `preferred_username` and `groups`, and go to the clients below.
 */
export interface TestSso {
  issuer: string;
  jwksUri: string;
  close(): Promise<void>;
}

export interface TestSsoOptions {
  /** Login name to groups. Anyone else signs in with no group. */
  accounts: Record<string, string[]>;
  /** The console's origin (its client's redirect URI is `<origin>/console/callback`). */
  consoleOrigin: string;
  consoleClientId?: string;
  cliClientId?: string;
  /** How long its ID tokens last, in seconds (an hour unless a test needs one to expire). */
  idTokenTtl?: number;
}

export async function startTestSso(options: TestSsoOptions): Promise<TestSso> {
  const server: Server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const key = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  const scopes = 'openid profile groups';

  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: options.consoleClientId ?? 'jit-console',
        application_type: 'web',
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code'],
        response_types: ['code'],
        redirect_uris: [`${options.consoleOrigin}/console/callback`],
        id_token_signed_response_alg: 'ES256',
      },
      {
        client_id: options.cliClientId ?? 'jit-cli',
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1/callback'],
        id_token_signed_response_alg: 'ES256',
      },
    ],
    jwks: { keys: [{ ...key, kid: 'sso-es256', alg: 'ES256', use: 'sig' }] },
    cookies: { keys: ['test-sso-cookie-key-not-a-secret'] },
    scopes: ['openid', 'profile', 'groups'],
    claims: { openid: ['sub'], profile: ['preferred_username', 'name'], groups: ['groups'] },
    // The claims of the scopes asked for go into the ID token, which is all the broker sees.
    conformIdTokenClaims: false,
    features: { devInteractions: { enabled: true } },
    async findAccount(_ctx: unknown, id: string) {
      return { accountId: id, claims: async () => ({ sub: id, preferred_username: id, name: id, groups: options.accounts[id] ?? [] }) };
    },
    // No consent screen: the company has consented for its own console.
    async loadExistingGrant(ctx: { oidc: { client: { clientId: string }; session: { accountId: string }; provider: { Grant: new (init: object) => { addOIDCScope(s: string): void; save(): Promise<void> } } } }) {
      const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope(scopes);
      await grant.save();
      return grant;
    },
    clientBasedCORS(_ctx: unknown, origin: string, client: { redirectUris: string[] }) {
      return client.redirectUris.some((uri) => URL.parse(uri)?.origin === origin);
    },
    pkce: { required: () => true },
    // Set, so oidc-provider does not print a notice for each default.
    ttl: { AccessToken: 600, AuthorizationCode: 60, Grant: 3600, IdToken: options.idTokenTtl ?? 3600, Interaction: 600, Session: 3600 },
  });
  provider.on('server_error', (_ctx: unknown, error: Error) => process.stderr.write(`test SSO server_error: ${error.stack ?? error}\n`));
  server.on('request', provider.callback());

  return {
    issuer,
    jwksUri: `${issuer}/jwks`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
