import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import express, { Router, type Request } from 'express';
import type { Logger } from 'pino';
import type { BrokerConfig, ConsoleConfig } from '../config/index.js';
import type { Clock } from '../shared/clock.js';
import { packageRoot } from '../shared/package.js';
import { NotFound } from '../shared/errors.js';
import { createDiscovery, type SignInEndpoints } from './discovery.js';
import { DEV_SIGN_IN_PATH, devSignInIssuer, devSignInRoutes } from './dev-sign-in.js';

/**
 * `GET /console` (CONTRACT section 4): the web console for people, static files that run in the
 * browser and call the same `/v1` API as every client, with the person's ID token as Bearer
 * identity, kept in page memory only. The broker serves the files, tells the page where to
 * sign in (`/console/config.json`, which `jit login` reads too), and with `devSignIn` plays the
 * development issuer's sign-in page. It adds no other way in.
 */

/** Built by `npm run build` (tsc, then the static files copied beside): the same folder from src/ and dist/. */
const consoleAssetsDir = () => join(packageRoot(), 'dist', 'console', 'web');

/**
 * What `/console/assets` serves: the page's scripts and stylesheet, by a name with no percent
 * escape, so the file the static handler decodes it to is the one this names.
 */
const ASSET_PATH = /^\/[A-Za-z0-9_-]+\.(?:js|css)$/;

/** Defence in depth: a file from there opened as a document runs nothing and cannot be framed. */
const ASSET_HEADERS = { 'Content-Security-Policy': "default-src 'none'; frame-ancestors 'none'", 'X-Frame-Options': 'DENY' };

/** The console's pages: one document, the script draws the view the path names. */
const PAGES = ['/', '/callback', '/signed-out', '/mine', '/break-glass', '/audit', '/requests/:id'];

export interface ConsoleRouteDeps {
  config: BrokerConfig;
  logger: Logger;
  clock: Clock;
  fetch?: typeof fetch;
}

export function consoleRoutes(deps: ConsoleRouteDeps): Router {
  const { config, logger } = deps;
  const web = config.console;
  const signIn = web ? signInSource(deps, web) : undefined;
  const router = Router({ caseSensitive: true });

  router.get(PAGES, async (_req, res) => {
    let page: string;
    try {
      page = readFileSync(join(consoleAssetsDir(), 'index.html'), 'utf8');
    } catch {
      logger.error({ dir: consoleAssetsDir() }, 'console: its files are not built; run npm run build');
      throw new NotFound('The console is not built on this broker (npm run build).');
    }
    res.set(pageHeaders((await signIn?.origins()) ?? [])).type('html').send(page);
  });

  // The page's origin only; scripts and styles never come from anywhere else. The page itself is
  // not an asset: served from here it would come without its policy, and could be framed.
  router.use(
    '/assets',
    (req, _res, next) => {
      if (!ASSET_PATH.test(req.path)) throw new NotFound('No such console asset.');
      next();
    },
    express.static(consoleAssetsDir(), {
      index: false,
      redirect: false,
      dotfiles: 'deny',
      fallthrough: true,
      cacheControl: false,
      setHeaders: (res) => res.set({ 'Cache-Control': 'no-cache', 'Cross-Origin-Resource-Policy': 'same-origin', ...ASSET_HEADERS }),
    }),
  );

  if (web?.devSignIn) router.use(DEV_SIGN_IN_PATH, devSignInRoutes({ config, console: web, logger, clock: deps.clock }));

  router.get('/config.json', async (req, res) => {
    if (!web || !signIn) throw new NotFound('The console is not configured: add a console section naming the person issuer people sign in with.');
    const issuer = config.identity.issuers.find((candidate) => candidate.name === web.issuer);
    res.set('Cache-Control', 'no-store').json({
      issuer: issuer?.issuer as string,
      client_id: web.clientId,
      cli_client_id: web.cliClientId ?? web.clientId,
      scopes: web.scopes,
      ...(await signIn.endpoints(req)),
      development: web.devSignIn,
    } satisfies ConsoleDocument);
  });

  return router;
}

interface SignInSource {
  endpoints(req: Request): Promise<SignInEndpoints & { discovery_url: string }>;
  /** Origins the page fetches from besides its own: the issuer's token endpoint. */
  origins(): Promise<string[]>;
}

/** Where people sign in: the development sign-in on this broker, or the person issuer's discovery document. */
function signInSource(deps: ConsoleRouteDeps, web: ConsoleConfig): SignInSource {
  const { config } = deps;
  if (web.devSignIn) {
    devSignInIssuer(config, web); // refuses anything but a dev: issuer, whatever the schema let through
    return {
      async endpoints(req) {
        // Development only: the endpoints are on whatever port PORT chose, while `issuer` names the default.
        const base = `${req.protocol}://${req.get('host') ?? '127.0.0.1'}/console${DEV_SIGN_IN_PATH}`;
        return { discovery_url: `${base}/.well-known/openid-configuration`, authorization_endpoint: `${base}/authorize`, token_endpoint: `${base}/token` };
      },
      origins: async () => [],
    };
  }
  const iss = config.identity.issuers.find((candidate) => candidate.name === web.issuer)?.issuer as string;
  const discoveryUrl = web.discoveryUrl ?? `${iss.replace(/\/+$/, '')}/.well-known/openid-configuration`;
  const discovery = createDiscovery({ url: discoveryUrl, issuer: iss, fetch: deps.fetch ?? fetch, clock: deps.clock, logger: deps.logger });
  return {
    endpoints: async () => ({ discovery_url: discoveryUrl, ...(await discovery.endpoints()) }),
    // A page served while the document cannot be read fetches nothing but its own origin, and says why.
    origins: () => discovery.endpoints().then((found) => [new URL(found.token_endpoint).origin], () => []),
  };
}

/** `/console/config.json`: where people sign in. `jit login` reads it too. */
export interface ConsoleDocument {
  issuer: string | undefined;
  client_id: string;
  cli_client_id: string;
  scopes: string[];
  discovery_url: string;
  authorization_endpoint: string;
  token_endpoint: string;
  end_session_endpoint?: string;
  development: boolean;
}

/**
 * A strict policy: scripts, styles and images from this origin only, no inline script or style
 * (Trusted Types refuses any string as markup), fetches to this origin and the sign-in issuer's
 * token endpoint, no forms, no framing, no referrer (the callback's URL holds a code).
 */
export function pageHeaders(signInOrigins: string[]): Record<string, string> {
  const policy = [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    `connect-src 'self'${signInOrigins.map((origin) => ` ${origin}`).join('')}`,
    "form-action 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
    "require-trusted-types-for 'script'",
    "trusted-types 'none'",
  ].join('; ');
  return {
    'Content-Security-Policy': policy,
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'no-referrer',
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cache-Control': 'no-store',
  };
}

export type { ConsoleConfig };
