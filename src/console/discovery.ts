import type { Logger } from 'pino';
import { readBoundedBody, utf8 } from '../shared/bounded-body.js';
import type { Clock } from '../shared/clock.js';
import { Unavailable } from '../shared/errors.js';
import { isSecureOrLoopback } from '../shared/loopback.js';

/** What the console and `jit login` need from the person issuer's discovery document. */
export interface SignInEndpoints {
  authorization_endpoint: string;
  token_endpoint: string;
  end_session_endpoint?: string;
}

export interface DiscoveryOptions {
  /** The discovery document's URL. */
  url: string;
  /** The `iss` its ID tokens carry: the document must say the same (OpenID Connect Discovery 4.3). */
  issuer: string;
  fetch: typeof fetch;
  clock: Clock;
  logger: Logger;
}

const CACHE_MS = 10 * 60_000;
const FAILURE_COOLDOWN_MS = 30_000;
const TIMEOUT_MS = 5_000;
const MAX_BYTES = 256 * 1024;

/**
 * The person issuer's endpoints, read from its discovery document when first needed and kept
 * for ten minutes. A document that cannot be read, or that names another issuer or a plain-http
 * endpoint off this machine, is refused (503) and not asked for again for 30 seconds.
 */
export function createDiscovery(options: DiscoveryOptions): { endpoints(): Promise<SignInEndpoints> } {
  let cached: { endpoints?: SignInEndpoints; until: number } | undefined;
  let inFlight: Promise<SignInEndpoints> | undefined;

  async function read(): Promise<SignInEndpoints> {
    try {
      const response = await options.fetch(options.url, { headers: { accept: 'application/json' }, redirect: 'error', signal: AbortSignal.timeout(TIMEOUT_MS) });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      // Read no further than the bound: a broken or hostile endpoint cannot make the broker buffer a body without end.
      const text = utf8(await readBoundedBody(response, MAX_BYTES, () => new Error('larger than 256 KiB')));
      const endpoints = validate(JSON.parse(text) as unknown, options.issuer);
      cached = { endpoints, until: options.clock() + CACHE_MS };
      return endpoints;
    } catch (error) {
      options.logger.error({ discovery: options.url, problem: (error as Error).message }, 'console: cannot read the sign-in issuer\'s discovery document');
      cached = { until: options.clock() + FAILURE_COOLDOWN_MS };
      throw unavailable();
    }
  }

  return {
    async endpoints() {
      if (cached && cached.until > options.clock()) {
        if (cached.endpoints) return cached.endpoints;
        throw unavailable();
      }
      inFlight ??= read().finally(() => (inFlight = undefined));
      return inFlight;
    },
  };
}

const unavailable = () => new Unavailable('The sign-in issuer\'s discovery document cannot be read right now; try again shortly.');

function validate(document: unknown, issuer: string): SignInEndpoints {
  if (typeof document !== 'object' || document === null) throw new Error('not a JSON object');
  const doc = document as Record<string, unknown>;
  if (doc.issuer !== issuer) throw new Error(`it names issuer ${JSON.stringify(doc.issuer)}, not ${issuer}`);
  const methods = doc.code_challenge_methods_supported;
  if (Array.isArray(methods) && !methods.includes('S256')) throw new Error('it does not offer PKCE with S256');
  const endpoint = (name: string, required: boolean) => {
    const value = doc[name];
    if (value === undefined && !required) return undefined;
    const url = typeof value === 'string' ? URL.parse(value) : null;
    if (!url || !isSecureOrLoopback(url)) {
      throw new Error(`${name} is not an https URL`);
    }
    return url.href;
  };
  const endSession = endpoint('end_session_endpoint', false);
  return {
    authorization_endpoint: endpoint('authorization_endpoint', true) as string,
    token_endpoint: endpoint('token_endpoint', true) as string,
    ...(endSession !== undefined ? { end_session_endpoint: endSession } : {}),
  };
}
