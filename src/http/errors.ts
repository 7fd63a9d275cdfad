import { isUtf8 } from 'node:buffer';
import { randomUUID } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { ErrorRequestHandler, Request, RequestHandler } from 'express';
import { BrokerError, InvalidRequest, MethodNotAllowed, NoSuchEndpoint, PayloadTooLarge, type FieldError, type OAuthErrorCode } from '../shared/errors.js';
import { methodsOf } from './openapi/index.js';
import { pathOfTarget, targetPath } from './target-path.js';

export const PROBLEM_TYPE_BASE = 'urn:jit-broker:problem:';

const TITLES: Record<BrokerError['type'], string> = {
  invalid_request: 'Invalid request',
  invalid_token: 'Invalid token',
  policy_denied: 'Denied by policy',
  separation_of_duties: 'Separation of duties',
  not_found: 'Not found',
  conflict: 'Conflict',
  rate_limited: 'Rate limited',
  unavailable: 'Unavailable',
};

/**
 * `Retry-After` of every 503 (RFC 9110 section 10.2.3), in seconds. What makes the broker
 * unavailable passes in seconds: a pool reconnecting to PostgreSQL, another process's SQLite
 * write lock (waited on up to 5 s), a readiness verdict (kept 1 s). Long enough that clients and
 * load balancers do not hammer a store that is recovering, short enough that nobody waits long
 * once it has.
 */
export const UNAVAILABLE_RETRY_AFTER_SECONDS = 5;

/** CONTRACT section 4: a body over 64 KiB gets 413. */
export const BODY_LIMIT = '64kb';
const BODY_LIMIT_BYTES = 64 * 1024;
const tooLarge = () => new PayloadTooLarge('The request body is larger than 64 KiB.');

/**
 * A body that says it is over the limit is refused at once, whatever type it claims: only JSON
 * is read (and counted as it is), so another type would otherwise get the 400 of its type.
 */
export const refuseLargeBodies: RequestHandler = (req, _res, next) => {
  if (Number(req.headers['content-length']) > BODY_LIMIT_BYTES) throw tooLarge();
  next();
};

/**
 * body-parser's `verify`: a body whose bytes are not UTF-8 (an encoded lone surrogate, an overlong
 * NUL, a stray byte) is refused, never read with U+FFFD standing in for what the caller sent.
 */
export function utf8Only(_req: unknown, _res: unknown, body: Buffer): void {
  if (!isUtf8(body)) throw Object.assign(new Error('The request body is not UTF-8.'), { type: 'encoding.invalid', status: 400 });
}

/** body-parser reports its failures as errors with a `type`; they are the caller's fault. */
function fromBodyParser(error: { type?: unknown; status?: unknown }): BrokerError | undefined {
  switch (error.type) {
    case 'entity.too.large':
      return tooLarge();
    case 'entity.parse.failed':
      return new InvalidRequest('The request body is not valid JSON.');
    case 'charset.unsupported':
    case 'encoding.invalid':
      return new InvalidRequest('The request body must be UTF-8.');
    case 'encoding.unsupported':
      return new InvalidRequest('The request body\'s Content-Encoding is not one this server reads (identity, gzip, deflate or br).');
    case 'parameters.too.many':
      return new InvalidRequest('The request has too many parameters.');
    default:
      return typeof error.status === 'number' && error.status >= 400 && error.status < 500
        ? new InvalidRequest('The request could not be read.')
        : undefined;
  }
}

/** `/oauth2` speaks RFC 6749 errors; everything else RFC 9457 problem+json. */
const isOAuthPath = (req: Request) => targetPath(req).startsWith('/oauth2/');

/**
 * The last handler: no route answered. Routing is case-sensitive, so another spelling of an
 * endpoint's path ends here too. A path that is an endpoint, asked with a method it does not
 * take, is 405 naming those it takes.
 */
export const noSuchEndpoint: RequestHandler = (req) => {
  const allowed = methodsOf(req.path);
  throw allowed.length > 0 ? new MethodNotAllowed(req.method, req.path, allowed) : new NoSuchEndpoint(req.method, req.path);
};

/**
 * RFC 6749 section 5.2: a requested scope that is "invalid, unknown, or malformed" is
 * `invalid_scope`, so at the token endpoint a `scope` parameter its validation refuses (not a
 * scope name, a scope named twice) is too, when nothing else was wrong. A `scope` parameter
 * missing or sent twice stays `invalid_request` (RFC 6749 section 3.2); `/v1` keeps its
 * validation problem.
 */
function oauthErrorOf(error: BrokerError, req: Request): OAuthErrorCode {
  if (error.oauthError !== 'invalid_request' || !/^\/oauth2\/token\/?$/.test(targetPath(req))) return error.oauthError;
  const fields = error.extensions.errors as FieldError[] | undefined;
  const scopeOnly = fields !== undefined && fields.length > 0 && fields.every((field) => /^#\/scopes?(\/|$)/.test(field.pointer));
  return scopeOnly && typeof (req.body as Record<string, unknown> | undefined)?.scope === 'string' ? 'invalid_scope' : error.oauthError;
}

/**
 * The one place failures become responses. A `BrokerError` carries its own status, type and
 * headers; anything else is a defect, logged in full and answered with a bare 500 that says
 * nothing of what broke.
 */
export const errorHandler: ErrorRequestHandler = (err, req, res, _next) => {
  const error = err instanceof BrokerError ? err : fromBodyParser(err as object);
  if (!error) {
    req.log.error({ err }, 'unhandled error');
    if (res.headersSent) return res.destroy();
    if (isOAuthPath(req)) {
      return res.status(500).json({ error: 'server_error', error_description: 'The broker could not complete this request; nothing was granted.' });
    }
    return res.status(500).type('application/problem+json').json({
      type: 'about:blank',
      title: 'Internal Server Error',
      status: 500,
      detail: 'The broker could not complete this request; nothing was granted.',
    });
  }

  const logged = { problem: error.type, detail: error.detail, ...error.internal };
  if (error.status >= 500) req.log.error({ ...logged, err: error.cause ?? error }, 'request failed');
  else req.log.info(logged, 'request refused');
  if (res.headersSent) return res.destroy();

  // By status, not by class: every 503 says when to ask again, whichever failure it answers.
  const retryAfter = (status: number) => (status === 503 ? { 'Retry-After': String(UNAVAILABLE_RETRY_AFTER_SECONDS) } : {});
  if (isOAuthPath(req)) {
    res.set({ ...retryAfter(error.oauthStatus), ...error.oauthHeaders() });
    return res.status(error.oauthStatus).json({ error: oauthErrorOf(error, req), error_description: error.detail, ...error.extensions });
  }
  res.set({ ...retryAfter(error.status), ...error.headers() });
  return res
    .status(error.status)
    .type('application/problem+json')
    .json({ type: PROBLEM_TYPE_BASE + error.type, title: TITLES[error.type], status: error.status, detail: error.detail, ...error.extensions });
};

/**
 * Node answers a request it cannot read (headers past its 16 KiB, a malformed request line, one
 * not sent within `requestTimeout`) itself, with a bare status line. This answers it as every
 * other refusal is, a problem with a request id, and closes the connection as node would.
 */
export function answerUnreadable(error: NodeJS.ErrnoException, socket: Duplex): void {
  if (!socket.writable || (socket as { _httpMessage?: unknown })._httpMessage) {
    socket.destroy();
    return;
  }
  const [status, reason, detail] =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'Request Header Fields Too Large', 'The request headers are larger than this server reads.']
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'Request Timeout', 'The request was not sent in time.']
        : [400, 'Bad Request', 'The request is not HTTP this server can read.'];
  // Under /oauth2, an OAuth error, as every other answer there, when the request line could be read.
  const target = /^[A-Z]+ (\S+) /.exec((error as { rawPacket?: Buffer }).rawPacket?.toString('latin1') ?? '')?.[1];
  const oauth = target !== undefined && (pathOfTarget(target)?.startsWith('/oauth2/') ?? false);
  const [type, body] = oauth
    ? ['application/json', JSON.stringify({ error: 'invalid_request', error_description: detail })]
    : ['application/problem+json', JSON.stringify({ type: `${PROBLEM_TYPE_BASE}invalid_request`, title: TITLES.invalid_request, status, detail })];
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: ${type}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
      `X-Request-Id: ${randomUUID()}\r\nConnection: close\r\n\r\n${body}`,
  );
}
