import { randomUUID } from 'node:crypto';
import type { Response } from 'express';
import type { Logger } from 'pino';
import { pinoHttp } from 'pino-http';
import type { Identity } from '../identity/index.js';

const INCOMING_REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;
const QUIET_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * One JSON line per request, with a request id (the caller's `X-Request-Id` if it is sane,
 * else a fresh one, echoed back). Only method, path, status, timing and, once its identity token
 * is verified, the caller (`caller: {issuer, sub}`, the issuer's configured name) are written:
 * never headers, query strings or bodies, which is where bearer tokens and subject tokens travel.
 */
export function requestLogging(logger: Logger) {
  return pinoHttp({
    logger,
    genReqId(req, res) {
      const incoming = req.headers['x-request-id'];
      const id = typeof incoming === 'string' && INCOMING_REQUEST_ID.test(incoming) ? incoming : randomUUID();
      res.setHeader('X-Request-Id', id);
      return id;
    },
    serializers: {
      req: (req: { id: unknown; method: string; url: string }) => ({ id: req.id, method: req.method, path: req.url.split('?')[0] }),
      res: (res: { statusCode: number }) => ({ status: res.statusCode }),
    },
    // Called when the request starts (no caller yet) and again when it ends.
    customProps: (_req, res) => {
      const identity = (res as unknown as Response).locals?.identity as Identity | undefined;
      return identity ? { caller: { issuer: identity.idp, sub: identity.sub } } : {};
    },
    customLogLevel: (_req, res, err) => (err || res.statusCode >= 500 ? 'error' : 'info'),
    autoLogging: { ignore: (req) => QUIET_PATHS.has((req.url ?? '').split('?')[0] as string) },
  });
}
