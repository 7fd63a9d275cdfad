import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BROKER_ISSUER, startTestBroker, type TestBroker } from '../helpers/broker.js';

let t: TestBroker;
beforeAll(async () => {
  t = await startTestBroker();
});
afterAll(async () => {
  await t.close();
});

const PATHS = ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration'];

describe('authorization server metadata (RFC 8414)', () => {
  it.each(PATHS)('%s holds every field RFC 8414 requires, and how each endpoint takes its caller', async (path) => {
    const response = await t.http.get(path);
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toMatch(/^application\/json/);
    expect(response.body).toEqual({
      issuer: BROKER_ISSUER,
      jwks_uri: `${BROKER_ISSUER}/.well-known/jwks.json`,
      token_endpoint: `${BROKER_ISSUER}/oauth2/token`,
      introspection_endpoint: `${BROKER_ISSUER}/oauth2/introspect`,
      revocation_endpoint: `${BROKER_ISSUER}/oauth2/revoke`,
      // Required by RFC 8414 section 2; the broker has no authorization endpoint, so none.
      response_types_supported: [],
      grant_types_supported: ['urn:ietf:params:oauth:grant-type:token-exchange'],
      // A public client: the identity travels as the subject_token.
      token_endpoint_auth_methods_supported: ['none'],
      // The caller's identity as a Bearer token (an access token type, which RFC 8414 admits here).
      introspection_endpoint_auth_methods_supported: ['Bearer'],
      revocation_endpoint_auth_methods_supported: ['Bearer'],
      scopes_supported: t.config.scopes.map((scope) => scope.name),
      access_token_signing_alg_values_supported: ['ES256'],
      // RFC 9396: the types a request's authorization_details may hold (the duties'; none here).
      authorization_details_types_supported: [],
      // RFC 9449: the DPoP proof algorithms accepted.
      dpop_signing_alg_values_supported: ['ES256', 'EdDSA'],
    });
  });

  it('serves the same document at both paths', async () => {
    const [oauth, openid] = await Promise.all(PATHS.map((path) => t.http.get(path)));
    expect(openid?.body).toEqual(oauth?.body);
  });

  it('names the algorithm of every published key, so tokens of a former algorithm still verify', async () => {
    await t.restart((c) => ((c.signing as Record<string, unknown>).algorithm = 'EdDSA'));
    const { body } = await t.http.get(PATHS[0] as string);
    expect(body.access_token_signing_alg_values_supported).toEqual(['EdDSA', 'ES256']);
  });
});
