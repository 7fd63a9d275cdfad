import express, { type Express, type RequestHandler } from 'express';
import { consoleRoutes } from '../console/index.js';
import type { Metrics } from '../observability/index.js';
import { NotFound } from '../shared/errors.js';
import type { AppDeps } from './deps.js';
import { errorHandler } from './errors.js';
import { requestLogging } from './logging.js';
import { auditRoutes } from './routes/audit.js';
import { credentialRoutes } from './routes/credentials.js';
import { discoveryRoutes } from './routes/discovery.js';
import { healthRoutes } from './routes/health.js';
import { listingRoutes } from './routes/listings.js';
import { oauthRoutes } from './routes/oauth.js';

/** The broker's HTTP face, apart from `listen` so tests drive the real app on a temporary database. */
export function buildApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  app.use(requestLogging(deps.logger));
  app.use(measure(deps.metrics));
  app.use((_req, res, next) => {
    res.set('X-Content-Type-Options', 'nosniff');
    next();
  });

  app.use(discoveryRoutes(deps));
  app.use(healthRoutes(deps));
  app.use('/oauth2', oauthRoutes(deps));
  app.use('/console', consoleRoutes(deps));

  // Every /v1 endpoint acts for a verified identity; bodies are read only once it is known.
  const v1 = express.Router();
  v1.use((_req, res, next) => {
    res.set('Cache-Control', 'no-store');
    next();
  });
  v1.use(deps.auth.requireIdentity);
  v1.use(express.json({ limit: '64kb' }));
  v1.use('/credentials', credentialRoutes(deps));
  v1.use('/audit', auditRoutes(deps));
  v1.use(listingRoutes(deps));
  app.use('/v1', v1);

  app.use((req) => {
    throw new NotFound(`No such endpoint: ${req.method} ${req.path}`);
  });
  app.use(errorHandler);
  return app;
}

/** Counts and times each request under its route pattern, never its raw path (ids would explode the labels). */
function measure(metrics: Metrics): RequestHandler {
  return (req, res, next) => {
    const end = metrics.httpDuration.startTimer();
    res.on('finish', () => {
      const route = req.route ? `${req.baseUrl}${String(req.route.path)}` : 'unmatched';
      end({ method: req.method, route });
      metrics.httpRequests.inc({ method: req.method, route, status: String(res.statusCode) });
    });
    next();
  };
}
