import { Router } from 'express';
import { BROKER_VERSION } from '../../shared/version.js';
import type { AppDeps } from '../deps.js';
import { openApiDocument } from '../openapi/index.js';

export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';

/** RFC 8414 metadata (served at both well-known paths), the JWKS resource servers verify with, and the OpenAPI document. */
export function discoveryRoutes({ config, settings, keyring }: AppDeps): Router {
  const base = config.issuer.replace(/\/+$/, '');
  const metadata = {
    issuer: config.issuer,
    jwks_uri: `${base}/.well-known/jwks.json`,
    token_endpoint: `${base}/oauth2/token`,
    introspection_endpoint: `${base}/oauth2/introspect`,
    revocation_endpoint: `${base}/oauth2/revoke`,
    grant_types_supported: [TOKEN_EXCHANGE_GRANT],
    token_endpoint_auth_methods_supported: ['none'],
    access_token_signing_alg_values_supported: [config.signing.algorithm],
  };
  const router = Router();
  router.get(['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration'], (_req, res) => {
    // Scopes come from the settings in force: a reload may add or remove some.
    const scopes = settings.current().config.scopes.map((scope) => scope.name);
    res.set('Cache-Control', 'public, max-age=300').json({ ...metadata, scopes_supported: scopes });
  });
  // CONTRACT section 3: at most half of publishAhead, so every cache has refreshed at least once
  // between a key's publication and its first token.
  const jwksMaxAge = Math.max(1, Math.min(300, Math.floor(config.signing.publishAhead / 2000)));
  router.get('/.well-known/jwks.json', (_req, res) => {
    res.set('Cache-Control', `public, max-age=${jwksMaxAge}`).json(keyring.jwks());
  });
  let document: ReturnType<typeof openApiDocument> | undefined;
  router.get('/openapi.json', (_req, res) => {
    document ??= openApiDocument({ issuer: config.issuer, version: BROKER_VERSION });
    res.set('Cache-Control', 'public, max-age=300').json(document);
  });
  return router;
}
