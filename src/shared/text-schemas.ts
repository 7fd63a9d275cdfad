import { z } from 'zod';

// Control characters and bidirectional overrides would let a value rewrite what an approver
// reads in a terminal or a log; these values end up in logs, CSV exports and webhook bodies.
// Written with escapes, so the OpenAPI document shows the same pattern, readably (its generator
// cannot carry the `u` flag, which JSON Schema patterns imply). Shared by the API's schemas and
// `jit policy test`, which answers a case with such text as the API does.
const BIDI_OVERRIDES = '\\u202a-\\u202e\\u2066-\\u2069';
const ONE_LINE = `^[^\\p{Cc}${BIDI_OVERRIDES}]*$`;
const LINES = `^(?:[\\t\\n]|[^\\p{Cc}${BIDI_OVERRIDES}])*$`;

/** A name-like value: one line. */
export const printable = (max: number) =>
  z
    .string()
    .min(1)
    .max(max)
    .regex(new RegExp(ONE_LINE, 'u'), 'must not contain control characters or bidirectional overrides')
    .meta({ pattern: ONE_LINE });

/** Free text a person writes (justifications, reasons, notes): tabs and newlines allowed. */
export const prose = (max: number) =>
  z
    .string()
    .max(max)
    .regex(new RegExp(LINES, 'u'), 'must not contain control characters (other than tab and newline) or bidirectional overrides')
    .meta({ pattern: LINES });

/**
 * The text fields of a credential request (CONTRACT section 4), one schema each for the API's
 * bodies and forms and for `jit policy test`'s cases alike.
 */
export const requestText = {
  taskId: printable(256),
  audience: printable(512),
  justification: prose(2000),
  /** An `authorization_details` identifier, or one value of its lists. */
  detailValue: printable(256),
};
