import { answerText } from './answer.js';
import { parseDuration } from './duration.js';
import { checkBrokerUrl, resolveBroker } from './broker.js';
import type { CliIo } from './cli-io.js';
import { CliError, EXIT, usage } from './errors.js';
import { claims, identityOptions, resolveIdentity, type IdentitySource, type IdentityValues } from './identity.js';

/** A thin HTTP client for the broker's API, speaking as one identity. */
export interface BrokerClient {
  readonly base: string;
  get<T = Record<string, unknown>>(path: string): Promise<T>;
  /** `headers` adds to the client's own (a DPoP proof); it cannot replace them. */
  post<T = Record<string, unknown>>(path: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; body: T }>;
  /** GETs a path and returns the raw response (exports stream). */
  raw(path: string): Promise<Response>;
  /**
   * RFC 8693 at `/oauth2/token`, with this client's identity as `subject_token`: 200 with the
   * token, or 400 `authorization_pending` with the request id; any other refusal throws.
   */
  exchange<T = Record<string, unknown>>(fields: Record<string, string>, headers?: Record<string, string>): Promise<{ status: number; body: T }>;
}

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';
/** RFC 6749 errors that are a refusal of what was asked (exit 3), as the /v1 problem types are. */
const OAUTH_REFUSALS = new Set(['invalid_scope', 'invalid_target', 'slow_down', 'insufficient_scope']);

/** How long one call to the broker may take (an export: how long it may pause); env JIT_TIMEOUT changes it. */
const DEFAULT_TIMEOUT = '30s';

/** The options of every command that calls the broker as someone. */
export const callerOptions = {
  broker: { type: 'string' },
  ...identityOptions,
  json: { type: 'boolean', default: false },
} as const;

export const BROKER_HELP = `Broker (the first that is given): --broker URL, env BROKER_URL, the CLI profile
  (jit profile set --broker URL), the broker of your jit login. https, or http to this machine
  (JIT_ALLOW_HTTP=1 allows plain http elsewhere, where the path is protected otherwise).`;

export type CallerValues = IdentityValues & { broker?: string | undefined };

/** The caller's client: its identity and the broker it talks to, each by its precedence. */
export function connect(io: CliIo, values: CallerValues): BrokerClient {
  const identity = resolveIdentity(io, values);
  const loginBroker = identity.loginBroker;
  const broker = resolveBroker(io.env, values, loginBroker !== undefined ? { url: loginBroker, source: identity.describe } : undefined);
  // A login's ID token is for the broker it was made at; it is never sent to another one.
  if (loginBroker !== undefined && checkBrokerUrl(loginBroker, identity.describe, io.env) !== broker.url) {
    throw usage(`${identity.describe} is for ${loginBroker}, not ${broker.url} (from ${broker.source}); run jit login there, or give another identity`);
  }
  return createClient(io, broker.url, identity);
}

export function createClient(io: CliIo, baseUrl: string, identity: IdentitySource | string): BrokerClient {
  const base = baseUrl.replace(/\/+$/, '');
  const timeoutMs = parseDuration(io.env.JIT_TIMEOUT || DEFAULT_TIMEOUT, 'JIT_TIMEOUT');
  const source: IdentitySource =
    typeof identity === 'string' ? { describe: 'the given token', token: async () => identity } : identity;

  async function call(method: string, path: string, body?: unknown, extraHeaders: Record<string, string> = {}, signal = AbortSignal.timeout(timeoutMs)): Promise<Response> {
    const token = await source.token();
    let response: Response;
    try {
      response = await io.fetch(`${base}${path}`, {
        method,
        headers: {
          ...extraHeaders,
          authorization: `Bearer ${token}`,
          accept: 'application/json',
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        redirect: 'manual',
        signal,
      });
    } catch (error) {
      const reason = (error as Error).name === 'TimeoutError' ? `no answer within ${timeoutMs / 1000}s` : causeCode(error);
      throw new CliError(`cannot reach the broker at ${base} (${reason})`, EXIT.unreachable);
    }
    if (isRedirect(response)) throw redirectRefused(response, base);
    if (response.status === 401) throw identityRefused(source.describe, token);
    if (response.status >= 400) throw await problem(response, base);
    return response;
  }

  async function json<T>(response: Response): Promise<T> {
    let text: string;
    try {
      text = await answerText(response, base);
    } catch (error) {
      if (error instanceof CliError) throw error;
      // The headers came, the body stopped: the call's deadline (it covers the body) or a broken connection.
      const reason = (error as Error).name === 'TimeoutError' ? `not whole within ${timeoutMs / 1000}s` : causeCode(error);
      throw new CliError(`the answer from ${base} stopped before its end (${reason})`, EXIT.unreachable);
    }
    try {
      return (text ? JSON.parse(text) : {}) as T;
    } catch {
      throw new CliError(`the answer from ${base} is not JSON: is that the broker?`);
    }
  }

  return {
    base,
    async get(path) {
      return json(await call('GET', path));
    },
    async post(path, body, headers) {
      const response = await call('POST', path, body, headers);
      return { status: response.status, body: await json(response) };
    },
    async raw(path) {
      // An export streams for as long as it has rows: only a pause of the timeout ends it.
      const controller = new AbortController();
      let idle: NodeJS.Timeout | undefined;
      const rearm = () => {
        clearTimeout(idle);
        idle = setTimeout(() => controller.abort(new DOMException(`no data for ${timeoutMs / 1000}s`, 'TimeoutError')), timeoutMs).unref();
      };
      rearm();
      const response = await call('GET', path, undefined, {}, controller.signal);
      const body = response.body?.pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(chunk, stream) {
            rearm();
            stream.enqueue(chunk);
          },
          flush: () => clearTimeout(idle),
        }),
      );
      return new Response(body ?? null, { status: response.status, headers: response.headers });
    },
    async exchange(fields, headers = {}) {
      let response: Response;
      const subject = await source.token();
      try {
        response = await io.fetch(`${base}/oauth2/token`, {
          method: 'POST',
          headers: { ...headers, accept: 'application/json', 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ grant_type: TOKEN_EXCHANGE, subject_token: subject, subject_token_type: JWT_TOKEN_TYPE, ...fields }),
          redirect: 'manual',
          signal: AbortSignal.timeout(timeoutMs),
        });
      } catch (error) {
        throw new CliError(`cannot reach the broker at ${base} (${causeCode(error)})`, EXIT.unreachable);
      }
      if (isRedirect(response)) throw redirectRefused(response, base);
      // A proxy's page in front of a broker that is down is no JSON: its status says enough.
      if (response.status === 502 || response.status === 503 || response.status === 504) throw await problem(response, base);
      const body = await json<Record<string, unknown>>(response);
      if (response.ok || body.error === 'authorization_pending') return { status: response.status, body: body as never };
      const description = String(body.error_description ?? '');
      // The broker refuses an identity at this endpoint as a bad parameter (400), naming which; an
      // expired one the CLI tells itself, as at /v1.
      if (body.error === 'invalid_request') {
        const refused = /^The (subject|actor)_token was not accepted\./.exec(description)?.[1];
        const actor = fields.actor_token ?? '';
        if (refused === 'subject' || expired(subject)) throw identityRefused(source.describe, subject);
        if (refused === 'actor' || expired(actor)) throw identityRefused('the actor token', actor);
      }
      const message = `${String(body.error ?? `HTTP ${response.status}`)}: ${description}`;
      // Any 400 naming fields: the broker's invalid_request, which its token endpoint may call invalid_scope or invalid_authorization_details.
      throw new CliError(message, refusalExit(response.status === 400 && namesFields(body), OAUTH_REFUSALS.has(String(body.error))));
    },
  };
}

const isRedirect = (response: Response) => response.status >= 300 && response.status < 400;

/**
 * A redirect is never followed: a 307 or 308 would replay the request, identity tokens and all
 * (the exchange's form carries subject_token and actor_token), to wherever it points. The message
 * names only the origin it points to: its path and query may carry anything.
 */
function redirectRefused(response: Response, base: string): CliError {
  const location = response.headers.get('location');
  let where = 'no Location';
  if (location !== null) {
    try {
      where = new URL(location, base).origin;
    } catch {
      where = 'a Location that is not a URL';
    }
  }
  return new CliError(`the broker at ${base} answered ${response.status}, a redirect (to ${where}): not followed, as it would take the identity token there; give the broker's own URL`);
}

/**
 * The broker answers every refused identity alike (the reason is in its log, not for a forger);
 * the one refusal the caller can safely fix, an expired token, the CLI tells by reading `exp`.
 */
function identityRefused(describe: string, token: string): CliError {
  if (expired(token)) {
    const exp = claims(token)?.exp as number;
    return new CliError(`the identity token from ${describe} expired at ${new Date(exp * 1000).toISOString()}; get a fresh one and run again`, EXIT.identityExpired);
  }
  return new CliError(
    `the broker did not accept the identity token from ${describe} (its issuer, audience, signature, age or a required claim; the broker's log says which)`,
    EXIT.identityRejected,
  );
}

/** A token whose `exp` has passed, by this machine's clock. */
function expired(token: string): boolean {
  const exp = claims(token)?.exp;
  return typeof exp === 'number' && exp * 1000 <= Date.now();
}

const REFUSALS = new Set(['policy_denied', 'separation_of_duties', 'rate_limited']);

async function problem(response: Response, base: string): Promise<CliError> {
  let type: string | undefined;
  let detail = `HTTP ${response.status}`;
  let fields = false;
  try {
    const body = JSON.parse(await answerText(response, base)) as { detail?: unknown; type?: unknown; error?: unknown; error_description?: unknown; errors?: unknown };
    if (typeof body.type === 'string') type = body.type.split(':').pop();
    fields = namesFields(body);
    if (typeof body.detail === 'string') detail = body.detail;
    // An /oauth2 answer: RFC 6749's error and its description.
    if (typeof body.error === 'string') detail = `${body.error}: ${typeof body.error_description === 'string' ? body.error_description : ''}`;
  } catch {
    // Not JSON, or too large (a proxy's page, another server): the status says enough.
  }
  // A 429 or 503 says when to ask again, in seconds (the broker's own form; an HTTP date is not shown).
  const retryAfter = /^[0-9]{1,9}$/.exec(response.headers.get('retry-after') ?? '')?.[0];
  const message = `${type ? `${type}: ` : ''}${detail}${(response.status === 429 || response.status === 503) && retryAfter ? ` (retry after ${retryAfter}s)` : ''}`;
  if (response.status === 502 || response.status === 503 || response.status === 504) {
    return new CliError(`the broker at ${base} is unavailable: ${message}`, EXIT.unreachable);
  }
  return new CliError(message, refusalExit(response.status === 400 && type === 'invalid_request' && fields, type !== undefined && REFUSALS.has(type)));
}

/** Whether a refusal lists the fields it refuses (`errors`, as the broker's 400s do, at /v1 and /oauth2 alike). */
const namesFields = (body: { errors?: unknown }): boolean => Array.isArray(body.errors) && body.errors.length > 0;

/**
 * The exit code of a refusal, one rule for /v1's problems and /oauth2's errors, as the README's
 * table says: a 400 invalid request naming fields refuses what the command was given, its
 * arguments (2); one by policy or an approver is 3; anything else 1.
 */
function refusalExit(invalidArguments: boolean, refused: boolean): number {
  if (invalidArguments) return EXIT.usage;
  return refused ? EXIT.refused : EXIT.failed;
}

/** Why a fetch failed, from its cause (ECONNREFUSED, ENOTFOUND, ...). */
export function causeCode(error: unknown): string {
  const cause = (error as { cause?: { code?: unknown; message?: unknown } }).cause;
  if (typeof cause?.code === 'string') return cause.code;
  if (typeof cause?.message === 'string') return cause.message;
  return 'no connection';
}
