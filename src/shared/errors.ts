/**
 * Every failure the broker reports to a caller, typed once. Each class carries its problem
 * `type` (CONTRACT section 4), its HTTP status and its OAuth error code, so the one HTTP error
 * handler renders them without knowing which is which. `detail` and `extensions` are public;
 * anything that would help an attacker goes in `internal`, which is logged and never sent.
 */

export type ProblemType =
  | 'invalid_request'
  | 'invalid_token'
  | 'policy_denied'
  | 'separation_of_duties'
  | 'not_found'
  | 'conflict'
  | 'rate_limited'
  | 'unavailable';

/** One bad field of a request or a configuration file, as RFC 9457 suggests. */
export interface FieldError {
  /** JSON pointer to the field, `#/scopes/0`. */
  pointer: string;
  detail: string;
}

interface ErrorOptions {
  extensions?: Record<string, unknown>;
  /** Logged, never sent: the real reason where the public detail stays generic. */
  internal?: Record<string, unknown>;
  cause?: unknown;
}

/**
 * CONTRACT section 4: every `/oauth2` error uses a code registered by RFC 6749, 6750, 7009, 7662,
 * 8628, 8693, 8707, 9396 or 9449, so that OAuth client libraries understand it.
 */
export type OAuthErrorCode =
  | 'invalid_request'
  | 'invalid_token'
  | 'insufficient_scope'
  | 'invalid_scope'
  | 'invalid_target'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'unsupported_token_type'
  | 'authorization_pending'
  | 'slow_down'
  | 'invalid_authorization_details'
  /** RFC 9449 section 5 registers it for a DPoP proof the token endpoint refuses. */
  | 'invalid_dpop_proof'
  | 'server_error'
  | 'temporarily_unavailable';

export abstract class BrokerError extends Error {
  abstract readonly type: ProblemType;
  abstract readonly status: number;
  /** The registered OAuth error code the `/oauth2` endpoints answer with. */
  abstract readonly oauthError: OAuthErrorCode;
  /** Status used by the `/oauth2` endpoints, where most refusals are a 400. */
  get oauthStatus(): number {
    return 400;
  }
  readonly extensions: Record<string, unknown>;
  readonly internal: Record<string, unknown>;

  constructor(
    readonly detail: string,
    options: ErrorOptions = {},
  ) {
    super(detail, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.extensions = options.extensions ?? {};
    this.internal = options.internal ?? {};
  }

  /** Response headers this failure requires (`WWW-Authenticate`, `Retry-After`). */
  headers(): Record<string, string> {
    return {};
  }

  /** The same on the `/oauth2` endpoints, where RFC 6750 adds a `WWW-Authenticate` to a 403. */
  oauthHeaders(): Record<string, string> {
    return this.headers();
  }
}

export class InvalidRequest extends BrokerError {
  readonly type = 'invalid_request';
  readonly status: number = 400;
  readonly oauthError: OAuthErrorCode = 'invalid_request';

  constructor(detail: string, errors?: FieldError[], options: ErrorOptions = {}) {
    super(detail, { ...options, extensions: { ...options.extensions, ...(errors ? { errors } : {}) } });
  }
}

/** RFC 8707 / RFC 8693: the token endpoint cannot tell which one audience is meant. */
export class InvalidTarget extends InvalidRequest {
  override readonly oauthError = 'invalid_target';
}

/** RFC 9396: `authorization_details` that are malformed, of an unknown type, or missing an object a step needs. */
export class InvalidAuthorizationDetails extends InvalidRequest {
  override readonly oauthError = 'invalid_authorization_details';
}

/** Which check of RFC 9449 a DPoP proof failed: stable, for logs and tests (the detail is for people). */
export type DpopProofProblem =
  | 'missing'
  | 'several'
  | 'too_large'
  | 'malformed'
  | 'type'
  | 'algorithm'
  | 'key'
  | 'signature'
  | 'claim'
  | 'method'
  | 'url'
  | 'stale'
  | 'future'
  | 'access_token_hash'
  | 'key_mismatch'
  | 'replayed';

/**
 * A DPoP proof (RFC 9449) that is missing where one is needed, or fails a check of its section
 * 4.3. Under `/v1` a 400 `invalid_request`; at `/oauth2` RFC 9449's own `invalid_dpop_proof`. The
 * detail names DPoP and says what was wrong; it never holds the proof or a token.
 */
export class InvalidDpopProof extends InvalidRequest {
  override readonly oauthError = 'invalid_dpop_proof';

  constructor(
    readonly problem: DpopProofProblem,
    detail: string,
  ) {
    super(detail, undefined, { internal: { dpop: problem } });
  }
}

export class PayloadTooLarge extends InvalidRequest {
  override readonly status = 413;
  override get oauthStatus(): number {
    return 413;
  }
}

/** Why an identity token was refused; logged and counted, never sent to the caller. */
export type TokenRejection =
  | 'missing'
  | 'malformed'
  | 'too_large'
  | 'access_token_as_identity'
  | 'embedded_key'
  | 'unknown_issuer'
  | 'algorithm'
  | 'unknown_key'
  | 'jwks_unavailable'
  | 'signature'
  | 'audience'
  | 'expired'
  | 'not_yet_valid'
  | 'issued_in_future'
  | 'too_old'
  | 'missing_claim'
  | 'invalid_claim';

/**
 * The caller's identity token was not accepted (401). The public text says only that: which
 * check failed stays in the log, so a forger learns nothing about how close they came.
 */
export class InvalidToken extends BrokerError {
  readonly type = 'invalid_token';
  readonly status = 401;
  readonly oauthError: OAuthErrorCode = 'invalid_token';

  constructor(
    readonly rejection: TokenRejection,
    internal: Record<string, unknown> = {},
  ) {
    super(
      rejection === 'missing'
        ? 'This endpoint needs an identity token: Authorization: Bearer <token>.'
        : 'The identity token was not accepted.',
      { internal: { rejection, ...internal } },
    );
  }

  override get oauthStatus(): number {
    return 401;
  }

  override headers(): Record<string, string> {
    // RFC 6750 section 3.1: no error attribute when the request carried no credentials at all.
    return { 'WWW-Authenticate': this.rejection === 'missing' ? 'Bearer' : 'Bearer error="invalid_token"' };
  }
}

/**
 * The policy refuses: scopes no policy grants, an audience not allowed, a role the caller lacks.
 * On `/oauth2` a refused scope is `invalid_scope` and a refused audience `invalid_target` (400);
 * a missing role or a forbidden action is RFC 6750's `insufficient_scope` (403).
 */
export class PolicyDenied extends BrokerError {
  readonly type = 'policy_denied';
  readonly status = 403;

  private constructor(
    detail: string,
    readonly oauthError: OAuthErrorCode,
    extensions: Record<string, unknown>,
  ) {
    super(detail, { extensions });
  }

  override get oauthStatus(): number {
    return this.oauthError === 'insufficient_scope' ? 403 : 400;
  }

  override oauthHeaders(): Record<string, string> {
    return this.oauthError === 'insufficient_scope' ? { 'WWW-Authenticate': 'Bearer error="insufficient_scope"' } : {};
  }

  static scopes(scopes: readonly string[], why: string): PolicyDenied {
    return new PolicyDenied(`Scope${scopes.length > 1 ? 's' : ''} ${scopes.join(', ')} refused: ${why}.`, 'invalid_scope', {
      scopes: [...scopes],
    });
  }

  static audience(audience: string): PolicyDenied {
    return new PolicyDenied(`Audience ${audience} is not allowed for the requested scopes.`, 'invalid_target', {
      audience,
    });
  }

  static role(roles: readonly string[]): PolicyDenied {
    return new PolicyDenied(`This needs the role ${roles.join(' or ')}.`, 'insufficient_scope', { required_roles: [...roles] });
  }

  /** The caller may see the thing but not do this to it. */
  static action(detail: string, oauthError: OAuthErrorCode = 'insufficient_scope'): PolicyDenied {
    return new PolicyDenied(detail, oauthError, {});
  }
}

export class SeparationOfDuties extends BrokerError {
  readonly type = 'separation_of_duties';
  readonly status = 403;
  readonly oauthError = 'invalid_scope';
}

export class NotFound extends BrokerError {
  readonly type = 'not_found';
  readonly status = 404;
  readonly oauthError = 'invalid_request';
}

/** No route answers this method and path: 404 under `/oauth2` too, where a missing thing named in a request is 400. */
export class NoSuchEndpoint extends NotFound {
  constructor(method: string, path: string) {
    super(`No such endpoint: ${method} ${path}`);
  }

  override get oauthStatus(): number {
    return 404;
  }
}

/** The path is an endpoint that does not take this method (RFC 9110 section 15.5.6): 405, naming the ones it takes in `Allow`. */
export class MethodNotAllowed extends InvalidRequest {
  override readonly status = 405;

  constructor(
    method: string,
    path: string,
    readonly allowed: readonly string[],
  ) {
    super(`${path} does not take ${method}; it takes ${allowed.join(', ')}.`);
  }

  override get oauthStatus(): number {
    return 405;
  }

  override headers(): Record<string, string> {
    return { Allow: this.allowed.join(', ') };
  }
}

export class Conflict extends BrokerError {
  readonly type = 'conflict';
  readonly status = 409;
  readonly oauthError = 'invalid_request';
}

/** A quota or limit is spent (429 with `Retry-After`); on `/oauth2`, RFC 8628's `slow_down`. */
export class RateLimited extends BrokerError {
  readonly type = 'rate_limited';
  readonly status = 429;
  readonly oauthError = 'slow_down';

  constructor(
    detail: string,
    readonly retryAfterSeconds: number,
  ) {
    super(detail, { extensions: { retry_after: retryAfterSeconds } });
  }

  override get oauthStatus(): number {
    return 429;
  }

  override headers(): Record<string, string> {
    return { 'Retry-After': String(this.retryAfterSeconds) };
  }
}

/** The broker cannot do this safely right now (the store cannot write): nothing was granted. */
export class Unavailable extends BrokerError {
  readonly type = 'unavailable';
  readonly status = 503;
  readonly oauthError = 'temporarily_unavailable';

  override get oauthStatus(): number {
    return 503;
  }
}

/**
 * A start the operator must fix, not a fault of the code: a secret that does not open what the
 * store holds, say. Never a caller's failure. The process says `message` in one line and exits 78
 * (EX_CONFIG), without a stack trace; `code` is stable for tests and runbooks.
 */
export class StartRefused extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** One problem of a file the broker reads besides its configuration: where it is, and what is wrong. */
export interface FileProblem {
  file: string;
  /** 1-based, where the problem has a place in the file. */
  line?: number | undefined;
  /** The field, as a dotted path (`cases.2.request.scopes.0`). */
  field?: string | undefined;
  message: string;
}

/** `file:line: field: message`, the way compilers point at a place. */
export const fileProblemText = (problem: FileProblem): string =>
  `${problem.file}${problem.line !== undefined ? `:${problem.line}` : ''}: ${problem.field !== undefined ? `${problem.field}: ` : ''}${problem.message}`;

/**
 * A policy cases file (`jit policy test`, `policyTests`) that cannot be run as it is: unreadable,
 * not YAML, a field of the wrong shape, or a case that could never be reached under the
 * configuration (an issuer or a scope it lacks). Never a failing case: that is a result.
 */
export class PolicyTestsInvalid extends Error {
  constructor(readonly problems: readonly FileProblem[]) {
    super(problems.map(fileProblemText).join('\n'));
    this.name = new.target.name;
  }
}
