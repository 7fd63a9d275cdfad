import { Router } from 'express';
import { packageVersion } from '../../shared/package.js';
import type { AppDeps } from '../deps.js';
import { openApiDocument } from '../openapi/index.js';

export const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';

/**
 * RFC 8414 metadata, served at both well-known paths, the JWKS resource servers verify with, and
 * the OpenAPI document.
 * The broker has no authorization endpoint (callers arrive with an identity already), so it
 * supports no `response_type`: RFC 8414 still requires the field, and an empty list says so.
 * Each endpoint says how it takes its caller: the token endpoint needs no client authentication
 * (the identity is the `subject_token`), introspection and revocation take the caller's identity
 * as a Bearer token (RFC 8414 section 2 admits access token types there).
 */
export function discoveryRoutes({ config, settings, keyring }: AppDeps): Router {
  const base = config.issuer.replace(/\/+$/, '');
  const metadata = {
    issuer: config.issuer,
    jwks_uri: `${base}/.well-known/jwks.json`,
    token_endpoint: `${base}/oauth2/token`,
    introspection_endpoint: `${base}/oauth2/introspect`,
    revocation_endpoint: `${base}/oauth2/revoke`,
    response_types_supported: [],
    grant_types_supported: [TOKEN_EXCHANGE_GRANT],
    token_endpoint_auth_methods_supported: ['none'],
    introspection_endpoint_auth_methods_supported: ['Bearer'],
    revocation_endpoint_auth_methods_supported: ['Bearer'],
  };
  const router = Router({ caseSensitive: true });
  router.get(['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration'], async (_req, res) => {
    // Scopes come from the settings in force: a reload may add or remove some.
    const { config: running, duties } = settings.current();
    const scopes = running.scopes.map((scope) => scope.name);
    // Every algorithm a published key signs with: after a change of `signing.algorithm`, tokens of the old one stay valid.
    const algorithms = [...new Set([config.signing.algorithm, ...(await keyring.jwks()).jwks.keys.map((key) => key.alg as string)])];
    res.set('Cache-Control', 'public, max-age=300').json({
      ...metadata,
      scopes_supported: scopes,
      access_token_signing_alg_values_supported: algorithms,
      // RFC 9396 section 10: the types `authorization_details` may hold here are the duties'.
      authorization_details_types_supported: duties.types,
      // RFC 9449 section 5.1: the proof algorithms accepted.
      dpop_signing_alg_values_supported: running.dpop.algorithms,
    });
  });
  // The keys are the store's, read again every few seconds (KEY_VIEW_MAX_AGE_MS): every replica
  // serves every replica's keys, cached for as long as the keyring says.
  router.get('/.well-known/jwks.json', async (_req, res) => {
    const { jwks, maxAgeSeconds } = await keyring.jwks();
    res.set('Cache-Control', `public, max-age=${maxAgeSeconds}`).json(jwks);
  });
  let document: ReturnType<typeof openApiDocument> | undefined;
  router.get('/openapi.json', (_req, res) => {
    document ??= openApiDocument({ issuer: config.issuer, version: packageVersion() });
    res.set('Cache-Control', 'public, max-age=300').json(document);
  });
  return router;
}
