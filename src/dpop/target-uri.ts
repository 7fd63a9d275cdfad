/**
 * The `htu` of a DPoP proof (RFC 9449 section 4.2): the request's target URI without query or
 * fragment. Two spellings of one URI compare equal after RFC 3986's syntax-based normalisation
 * (section 6.2.2: scheme and host in lower case, percent-encodings of unreserved characters
 * decoded and the others in upper case, dot segments removed) and its scheme-based one for http
 * (section 6.2.3: the default port dropped, an empty path is `/`).
 */

/** RFC 3986 section 2.3. */
const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

/**
 * The target URI of `path` at a service whose public base URL is `base` (the broker's `issuer`).
 * A server computes what it expects from its configured base, never from the Host header, which
 * the client chooses.
 */
export function dpopTargetUri(base: string, path: string): string {
  return `${base.replace(/\/+$/, '')}${path.startsWith('/') ? path : `/${path}`}`;
}

/**
 * The normal form of an absolute http(s) URI, query and fragment left out; undefined for
 * anything else. Only printable ASCII without `\` is a URI here: the WHATWG parser underneath
 * forgives white space, backslashes and a missing `//`, which RFC 3986 does not.
 */
export function normalizeTargetUri(text: string): string | undefined {
  const url = parseHttpUri(text);
  return url && `${url.protocol}//${url.host}${normalizePercentEncoding(url.pathname)}`;
}

/** What is wrong with an `htu` claim as a target URI, or undefined when nothing is. */
export function htuProblem(htu: string): 'not_a_uri' | 'userinfo' | 'query' | undefined {
  const url = parseHttpUri(htu);
  if (!url) return 'not_a_uri';
  if (url.username !== '' || url.password !== '') return 'userinfo';
  // Outside the query and fragment, `?` and `#` can only be written percent-encoded.
  if (/[?#]/.test(htu)) return 'query';
  return undefined;
}

/**
 * Whether the path of an absolute URI, as written, holds a dot segment (`.` or `..`, either dot
 * percent-encoded or not). Normalising removes them (RFC 3986 section 5.2.4), but a server routes
 * the path as received: `/admin/../artifacts` is the admin routes' business to express, and
 * `/artifacts` once normalised. A client resolves them before it sends a request, so a request
 * that still has one is refused rather than matched with a proof for another path.
 */
export function hasDotSegment(text: string): boolean {
  const path = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*([^?#]*)/i.exec(text)?.[1] ?? '';
  return path.split('/').some((segment) => /^(?:\.|%2e){1,2}$/i.test(segment));
}

function parseHttpUri(text: string): URL | undefined {
  if (!/^https?:\/\/[!-[\]-~]+$/i.test(text)) return undefined;
  try {
    return new URL(text);
  } catch {
    return undefined;
  }
}

function normalizePercentEncoding(path: string): string {
  return path.replace(/%[0-9A-Fa-f]{2}/g, (encoded) => {
    const character = String.fromCharCode(Number.parseInt(encoded.slice(1), 16));
    return UNRESERVED.test(character) ? character : encoded.toUpperCase();
  });
}
