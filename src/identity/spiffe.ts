import type { JSONWebKeySet } from 'jose';
import { SPIFFE_TRUST_DOMAIN } from '../config/index.js';

/** SPIFFE IDs and JWT-SVIDs, as the SPIFFE ID and JWT-SVID specifications define them. */

const SCHEME = 'spiffe://';
/** SPIFFE ID spec, section 2.3: at most 2048 bytes. */
const MAX_SPIFFE_ID_BYTES = 2048;
/** SPIFFE ID spec, section 2.2: segments of letters, digits, dots, dashes and underscores. */
const PATH_SEGMENT = /^[A-Za-z0-9._-]+$/;

export interface SpiffeId {
  trustDomain: string;
  /** Starts with `/`; never empty, as a JWT-SVID names a workload, not a trust domain. */
  path: string;
}

/**
 * A well-formed workload SPIFFE ID, or `undefined`. Strict, as the spec is: the scheme and the
 * trust domain in lower case, no user, port, query or fragment, no percent-encoding, no empty,
 * `.` or `..` path segment, no trailing slash.
 */
export function parseSpiffeId(text: string): SpiffeId | undefined {
  if (!text.startsWith(SCHEME) || Buffer.byteLength(text, 'utf8') > MAX_SPIFFE_ID_BYTES) return undefined;
  const rest = text.slice(SCHEME.length);
  const slash = rest.indexOf('/');
  if (slash < 0) return undefined;
  const trustDomain = rest.slice(0, slash);
  const path = rest.slice(slash);
  if (!SPIFFE_TRUST_DOMAIN.test(trustDomain)) return undefined;
  const wellFormed = path
    .slice(1)
    .split('/')
    .every((segment) => PATH_SEGMENT.test(segment) && segment !== '.' && segment !== '..');
  return wellFormed ? { trustDomain, path } : undefined;
}

/**
 * The trust domain a `sub` appears to name, read leniently (any letter case, with a user or a
 * port), lower-cased. Routing uses it so that another spelling of a configured trust domain
 * (`spiffe://EXAMPLE.org/...`) reaches that trust domain's issuer and is refused there as a
 * malformed SPIFFE ID, instead of being taken for something else.
 */
export function claimedTrustDomain(sub: string): string | undefined {
  if (sub.slice(0, SCHEME.length).toLowerCase() !== SCHEME) return undefined;
  const authority = sub.slice(SCHEME.length).split(/[/?#]/, 1)[0] as string;
  return authority.replace(/^.*@/, '').replace(/:[^:]*$/, '').toLowerCase();
}

/**
 * A SPIFFE trust bundle marks the keys that sign JWT-SVIDs `use: jwt-svid` and X.509 roots
 * `use: x509-svid`. jose's key sets take only `use: sig` (or none), so JWT-SVID keys are
 * presented as `sig`, and keys for any other use are dropped: an X.509 root never verifies a token.
 */
export function jwtSvidKeySet(bundle: JSONWebKeySet): JSONWebKeySet {
  return {
    keys: bundle.keys.flatMap((key) => {
      if (key.use === undefined || key.use === 'sig') return [key];
      return key.use === 'jwt-svid' ? [{ ...key, use: 'sig' }] : [];
    }),
  };
}
