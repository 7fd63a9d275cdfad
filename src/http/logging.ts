import { randomUUID } from 'node:crypto';
import type { RequestHandler, Response } from 'express';
import type { Logger } from 'pino';
import type { Identity } from '../identity/index.js';

declare module 'http' {
  interface IncomingMessage {
    /** This request's logger: its lines carry the request id. */
    log: Logger;
  }
}

const INCOMING_REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;
const QUIET_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * One JSON line per request, with a request id (the caller's `X-Request-Id` if it is sane,
 * else a fresh one, echoed back). Only method, path, status, timing and, once its identity token
 * is verified, the caller (`caller: {issuer, sub}`, the issuer's configured name) are written:
 * never headers, query strings or bodies, which is where bearer tokens and subject tokens travel.
 * A request's child logger is made only when something logs through it: at the level `warn`,
 * most requests write nothing and should cost nothing.
 */
export function requestLogging(logger: Logger): RequestHandler {
  return (req, res, next) => {
    const incoming = req.headers['x-request-id'];
    const id = typeof incoming === 'string' && INCOMING_REQUEST_ID.test(incoming) ? incoming : randomUUID();
    res.setHeader('X-Request-Id', id);
    const path = req.path;
    let child: Logger | undefined;
    Object.defineProperty(req, 'log', {
      get: () => (child ??= logger.child({ req: { id, method: req.method, path } })),
      configurable: true,
    });
    const started = performance.now();
    res.on('finish', () => {
      const level = res.statusCode >= 500 ? 'error' : 'info';
      if (QUIET_PATHS.has(path) || !logger.isLevelEnabled(level)) return;
      req.log[level](
        { res: { status: res.statusCode }, responseTime: Math.round(performance.now() - started), ...callerOf(res) },
        level === 'error' ? 'request errored' : 'request completed',
      );
    });
    next();
  };
}

function callerOf(res: Response) {
  const identity = res.locals.identity as Identity | undefined;
  return identity ? { caller: { issuer: identity.idp, sub: identity.sub } } : {};
}
