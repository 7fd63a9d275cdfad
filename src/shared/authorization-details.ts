import { normalizeName } from './names.js';

/**
 * An RFC 9396 authorization details entry as the broker takes it: the common fields only. A
 * request names the objects it acts on this way (`{type: "model", identifier: "fraud-v1"}`);
 * duties (CONTRACT section 1) follow each object across the steps of its lifecycle.
 */
export interface AuthorizationDetail {
  type: string;
  identifier?: string;
  actions?: string[];
  locations?: string[];
  datatypes?: string[];
  privileges?: string[];
}

/**
 * The object an identifier names, as duties compare it: normalised as person keys are (NFKC, full
 * case folding, white space, format and filler characters removed), so `Fraud-v1` and `fraud-v1`
 * are one model to a duty, to its chain of custody, and to the audit filters.
 */
export const objectKey = (identifier: string): string => normalizeName(identifier);

/** authorization_details travel in the token: at most this many bytes of JSON, so that no token grows past what the broker reads back. */
export const MAX_AUTHORIZATION_DETAILS_BYTES = 8 * 1024;

/** The refinement every reader of authorization_details applies (the API, policy tests): within MAX_AUTHORIZATION_DETAILS_BYTES. */
export const detailsWithinBound = [
  (details: readonly unknown[]) => Buffer.byteLength(JSON.stringify(details)) <= MAX_AUTHORIZATION_DETAILS_BYTES,
  { message: `at most ${MAX_AUTHORIZATION_DETAILS_BYTES} bytes as JSON: they travel in the token` },
] as const;
