/**
 * The benchmark's peer: panva's oidc-provider issuing `client_credentials` access tokens as
 * signed JWTs, the nearest well-known server to what the broker does per request (authenticate a
 * caller, decide a scope, sign a short-lived JWT). `npm run bench:http` starts it as its own
 * process, so its CPU time and memory can be read apart from the broker's and the load generator's.
 *
 *   node scripts/peer/oidc-provider.mjs [--alg ES256|RS256]
 *
 * It listens on a free loopback port and, once listening, prints ONE JSON line on stdout saying
 * where and how to ask it for a token: that line is how the bench learns the port and the client.
 * Plain JavaScript run by plain `node`, as the broker runs from dist/: no loader in the way.
 * Keys are made at start; nothing is written to disk.
 */
import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import Provider from 'oidc-provider';

const CLIENT_ID = 'bench-client';
const CLIENT_SECRET = 'bench-secret-not-a-secret';
const RESOURCE = 'urn:bench:artifacts';
const SCOPE = 'artifacts:read';

const { values } = parseArgs({ options: { alg: { type: 'string', default: 'ES256' } } });
if (values.alg !== 'ES256' && values.alg !== 'RS256') {
  process.stderr.write(`--alg must be ES256 or RS256, not ${values.alg}\n`);
  process.exit(2);
}

/** One private JWK per algorithm: oidc-provider wants an RS256 key for its ID-token defaults even when access tokens use ES256. */
function signingKeys() {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return [
    { ...rsa, kid: 'peer-rs256', alg: 'RS256', use: 'sig' },
    { ...ec, kid: 'peer-es256', alg: 'ES256', use: 'sig' },
  ];
}

/** The resource server the tokens are for: one scope, 15 minutes, JWT format (RFC 9068), like the broker's tokens. */
function resourceServer() {
  return {
    scope: SCOPE,
    audience: RESOURCE,
    accessTokenTTL: 15 * 60,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: values.alg } },
  };
}

// Listen first: the issuer URL names the port, which is only known once the socket is bound.
const server = createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  jwks: { keys: signingKeys() },
  // Fixed so oidc-provider does not warn about development defaults on every start.
  cookies: { keys: ['bench-cookie-key-not-a-secret'] },
  scopes: [SCOPE],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      useGrantedResource: () => true,
      getResourceServerInfo: (_ctx, indicator) => {
        if (indicator !== RESOURCE) throw new provider.constructor.errors.InvalidTarget();
        return resourceServer();
      },
    },
  },
});

// A failure inside the provider would otherwise only show as a 500 count in the bench table.
provider.on('server_error', (_ctx, error) => process.stderr.write(`peer server_error: ${error.stack ?? error}\n`));

server.on('request', provider.callback());
const ready = { issuer, token_endpoint: `${issuer}/token`, client_id: CLIENT_ID, client_secret: CLIENT_SECRET, resource: RESOURCE, scope: SCOPE, alg: values.alg };
process.stdout.write(`${JSON.stringify(ready)}\n`);

/** A clean stop on SIGTERM/SIGINT, and when the bench that started us goes away (its IPC channel closes). */
function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(1), 5_000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.on('disconnect', stop);
