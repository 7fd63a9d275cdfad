import express, { Router } from 'express';
import type { AppDeps } from '../deps.js';
import { identityOf } from '../auth.js';
import { BODY_LIMIT, refuseLargeBodies, utf8Only } from '../errors.js';
import { presentedProof } from '../dpop.js';
import * as tokenExchange from '../oauth/token-exchange.js';
import { tokenForm } from '../schemas.js';
import { parseInput } from '../validation.js';

/** RFC 6749 section 5.1: token responses and errors are never cached. */
const noStore: express.RequestHandler = (_req, res, next) => {
  res.set({ 'Cache-Control': 'no-store', Pragma: 'no-cache' });
  next();
};

/**
 * RFC 6749 section 3.2: "Parameters sent without a value MUST be treated as if they were omitted
 * from the request." A field sent empty (`ttl_seconds=`) is dropped before anything reads the
 * form; a parameter sent twice stays twice, and is refused (RFC 6749 section 3.2 again).
 */
const omitEmpty: express.RequestHandler = (req, _res, next) => {
  const form = req.body as Record<string, unknown> | undefined;
  if (form && typeof form === 'object') {
    for (const [name, value] of Object.entries(form)) if (value === '') delete form[name];
  }
  next();
};

/** The `token` parameter of introspection and revocation. */
const tokenParam = (body: unknown): string => parseInput(tokenForm, body ?? {}, 'body').token;

/** `/oauth2`: the token endpoint (RFC 8693), introspection (RFC 7662), revocation (RFC 7009). */
export function oauthRoutes(deps: AppDeps): Router {
  const { auth, tokens } = deps;
  const router = Router({ caseSensitive: true });
  router.use(noStore);
  // A body that says it is over 64 KiB is 413 whatever type it claims, as under /v1: only a form
  // is read (and counted as it is), so another type would otherwise get the 400 of a missing field.
  const readForm: express.RequestHandler[] = [refuseLargeBodies, express.urlencoded({ extended: false, limit: BODY_LIMIT, parameterLimit: 50, verify: utf8Only }), omitEmpty];

  router.post('/token', ...readForm, async (req, res) => {
    const grant = (req.body as Record<string, unknown> | undefined)?.grant_type;
    if (grant !== tokenExchange.grantType) {
      res.status(400).json({
        error: typeof grant === 'string' ? 'unsupported_grant_type' : 'invalid_request',
        error_description: `grant_type must be ${tokenExchange.grantType}.`,
      });
      return;
    }
    const result = await tokenExchange.exchange(req.body, deps, (identity) => (res.locals.identity = identity), presentedProof(req, deps.config.issuer));
    res.status(result.status).json(result.body);
  });

  // Who asks comes before what is asked, as under /v1: the form is read only once the caller is
  // known (401 without an identity) and, for introspection, holds the role (403), so a body too
  // large or not UTF-8 is never the answer to a caller who may not ask at all.
  const introspectorOnly: express.RequestHandler = (_req, res, next) => {
    tokens.authorizeIntrospector(identityOf(res));
    next();
  };
  router.post('/introspect', auth.requireIdentity, introspectorOnly, ...readForm, async (req, res) => {
    res.json(await tokens.introspect(identityOf(res), tokenParam(req.body)));
  });

  router.post('/revoke', auth.requireIdentity, ...readForm, async (req, res) => {
    await tokens.revoke(identityOf(res), tokenParam(req.body));
    res.status(200).end();
  });

  return router;
}
