import express, { type Express, type RequestHandler } from 'express';
import { consoleRoutes } from '../console/index.js';
import type { Metrics } from '../observability/index.js';
import type { AppDeps } from './deps.js';
import { BODY_LIMIT, errorHandler, noSuchEndpoint, refuseLargeBodies, utf8Only } from './errors.js';
import { requestLogging } from './logging.js';
import { findOperation } from './openapi/index.js';
import { auditRoutes } from './routes/audit.js';
import { credentialRoutes } from './routes/credentials.js';
import { discoveryRoutes } from './routes/discovery.js';
import { healthRoutes } from './routes/health.js';
import { listingRoutes } from './routes/listings.js';
import { oauthRoutes } from './routes/oauth.js';

/** The broker's HTTP face, apart from `listen` so tests drive the real app on a temporary database. */
export function buildApp(deps: AppDeps): Express {
  const app = express();
  // A path is one spelling (RFC 3986 section 6.2.2.1: only scheme and host are case-insensitive):
  // another is 404, never served by a route whose errors and DPoP `htu` assume its own. Set before
  // the first route, and again on every router, which does not inherit it.
  app.set('case sensitive routing', true);
  app.disable('x-powered-by');
  app.set('etag', false);

  app.use(requestLogging(deps.logger));
  app.use(measure(deps.metrics));
  app.use((_req, res, next) => {
    res.set('X-Content-Type-Options', 'nosniff');
    next();
  });

  // The endpoints that issue come first: a request walks the routers before its own.
  app.use('/oauth2', oauthRoutes(deps));
  // Every /v1 endpoint acts for a verified identity; bodies are read only once it is known.
  const v1 = express.Router({ caseSensitive: true });
  v1.use((_req, res, next) => {
    res.set('Cache-Control', 'no-store');
    next();
  });
  v1.use(deps.auth.requireIdentity);
  v1.use(refuseLargeBodies);
  v1.use(express.json({ limit: BODY_LIMIT, verify: utf8Only }));
  v1.use('/credentials', credentialRoutes(deps));
  v1.use('/audit', auditRoutes(deps));
  v1.use(listingRoutes(deps));
  app.use('/v1', v1);
  app.use(discoveryRoutes(deps));
  app.use(healthRoutes(deps));
  app.use('/console', consoleRoutes(deps));

  app.use(noSuchEndpoint);
  app.use(errorHandler);
  return app;
}

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

/**
 * Counts and times each request under its operation's path template (`/v1/credentials/{id}`),
 * never its raw path (ids would explode the labels). The template is found from the method and
 * path alone, so a request has the same label whether it succeeds, is refused before its route
 * runs (a 401), or fails; anything that is no operation is `unmatched`.
 */
function measure(metrics: Metrics): RequestHandler {
  return (req, res, next) => {
    const end = metrics.httpDuration.startTimer();
    const route = findOperation(req.method, req.path)?.path ?? 'unmatched';
    const method = METHODS.has(req.method) ? req.method : 'other';
    res.on('finish', () => {
      end({ method, route });
      metrics.httpRequests.inc({ method, route, status: String(res.statusCode) });
    });
    next();
  };
}
