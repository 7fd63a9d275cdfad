import { readFileSync, statSync } from 'node:fs';
import { NotAJwks, trustedKeysFromJwks, type TrustedKeys } from '../audit/index.js';
import { JWKS_MAX_BYTES, readCapped } from '../identity/index.js';
import { isSecureOrLoopback } from '../shared/loopback.js';
import type { CliIo } from './cli-io.js';
import { causeCode } from './client.js';
import { usage } from './errors.js';

/** How long fetching a JWKS may take, its body included. */
const JWKS_TIMEOUT_MS = 10_000;

/** The JWKS cannot be had (missing, unreachable, slow, too large, not a JWKS): nothing can be checked against it. */
export class JwksUnreadable extends Error {
  override readonly name = 'JwksUnreadable';
}

/**
 * The keys of `--jwks`: a JWKS file, or an https URL (plain http only to this machine, where no
 * one on the way can swap the keys), fetched with a deadline and a size cap like every JWKS the
 * broker fetches. Redirects are not followed: the URL given is the one trusted.
 */
export async function readTrustedJwks(io: CliIo, source: string): Promise<TrustedKeys> {
  const text = /^[a-z][a-z0-9+.-]+:\/\//i.test(source) ? await fetchJwks(io, jwksUrl(source)) : readJwksFile(source);
  try {
    return trustedKeysFromJwks(text, source);
  } catch (error) {
    if (error instanceof NotAJwks) throw new JwksUnreadable(error.message, { cause: error });
    throw error;
  }
}

function jwksUrl(text: string): URL {
  let url: URL | undefined;
  try {
    url = new URL(text);
  } catch {
    url = undefined;
  }
  if (url && isSecureOrLoopback(url)) return url;
  throw usage(`--jwks takes a file, or an https URL (plain http only to this machine), not ${text}`);
}

function readJwksFile(file: string): string {
  try {
    if (statSync(file).size > JWKS_MAX_BYTES) throw new JwksUnreadable(`${file} is larger than ${JWKS_MAX_BYTES} bytes: not a JWKS`);
    return readFileSync(file, 'utf8');
  } catch (error) {
    if (error instanceof JwksUnreadable) throw error;
    throw new JwksUnreadable(`cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`, { cause: error });
  }
}

async function fetchJwks(io: CliIo, url: URL): Promise<string> {
  const abort = new AbortController();
  const late = (error: unknown) => (error as Error).name === 'TimeoutError';
  const TOO_SLOW = `no answer within ${JWKS_TIMEOUT_MS / 1000}s`;
  let response: Response;
  try {
    response = await io.fetch(url.href, {
      headers: { accept: 'application/jwk-set+json, application/json' },
      redirect: 'manual',
      signal: AbortSignal.any([abort.signal, AbortSignal.timeout(JWKS_TIMEOUT_MS)]),
    });
  } catch (error) {
    throw new JwksUnreadable(`cannot fetch ${url.href} (${late(error) ? TOO_SLOW : causeCode(error)})`, { cause: error });
  }
  try {
    if (response.status >= 300 && response.status < 400) {
      throw new JwksUnreadable(`${url.href} answered ${response.status}, a redirect: not followed; give --jwks the URL that serves the JWKS`);
    }
    if (response.status !== 200) throw new JwksUnreadable(`${url.href} answered ${response.status}`);
    return await readCapped(response, abort);
  } catch (error) {
    if (error instanceof JwksUnreadable) throw error;
    // Too large, not UTF-8, or too slow to arrive.
    throw new JwksUnreadable(`cannot read the JWKS at ${url.href}: ${late(error) ? TOO_SLOW : (error as Error).message}`, { cause: error });
  } finally {
    // Whatever was not read is not wanted: release the connection.
    abort.abort();
  }
}
