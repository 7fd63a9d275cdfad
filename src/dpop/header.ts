import type { IncomingMessage } from 'node:http';
import { InvalidDpopProof } from '../shared/errors.js';

/**
 * The proof of a request's one DPoP header, or undefined when it has none. RFC 9449 section 4.3
 * refuses a request with more than one. express (like Node's `req.headers`) joins repeated
 * headers with a comma, so they are read apart here; a comma inside one value is two proofs
 * joined by a proxy on the way, and refused alike (a compact JWS holds no comma).
 */
export function singleDpopHeader(request: Pick<IncomingMessage, 'headersDistinct'>): string | undefined {
  return singleDpopProof(request.headersDistinct.dpop);
}

/** The same over the header's values as received: one string, every value, or none. */
export function singleDpopProof(values: string | readonly string[] | undefined): string | undefined {
  const all = typeof values === 'string' ? [values] : (values ?? []);
  if (all.length === 0) return undefined;
  const [proof] = all;
  if (all.length > 1 || proof === undefined || proof.includes(',')) {
    throw new InvalidDpopProof('several', 'A request carries one DPoP proof: this one has several DPoP headers.');
  }
  return proof;
}
