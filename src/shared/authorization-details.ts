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
