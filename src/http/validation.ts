import type { z } from 'zod';
import { InvalidRequest, type FieldError } from '../shared/errors.js';
import { malformedText } from '../shared/well-formed.js';

export interface ParseOptions {
  /** Where the value sits in the request, as a JSON pointer: `#/authorization_details` for a parameter holding JSON. */
  at?: string;
  /** The refusal to throw (a subclass of `InvalidRequest` with an OAuth code of its own). */
  refusal?: new (detail: string, errors?: FieldError[]) => InvalidRequest;
}

/**
 * Parses a body or query against its schema, once; handlers use only what this returns. A
 * failure names every bad field as a JSON pointer, and unknown fields are among them.
 */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown, where: 'body' | 'query', options: ParseOptions = {}): z.output<S> {
  const { at = '#', refusal: Refusal = InvalidRequest } = options;
  const pointer = (path: readonly PropertyKey[]) => `${at}${path.map((part) => `/${String(part)}`).join('')}`;
  const fail = (errors: FieldError[]) => {
    const summary = errors.map((e) => `${e.pointer === '#' ? where : e.pointer.slice(2)}: ${e.detail}`).join('; ');
    return new Refusal(`Invalid ${where}: ${summary}`, errors);
  };
  // express.json leaves the body undefined when the content type is not JSON: say so plainly.
  if (where === 'body' && input === undefined) throw new InvalidRequest('The body must be JSON (Content-Type: application/json).');
  // Every text of every field, before any of it is read (JSON's \uD800 and \u0000 escapes put a
  // lone surrogate or a NUL in any of them).
  const malformed = malformedText(input);
  if (malformed !== undefined) throw fail([{ pointer: pointer(malformed.path), detail: malformed.detail }]);
  const result = schema.safeParse(input ?? {});
  if (result.success) return result.data;
  throw fail(
    result.error.issues.flatMap((issue) => {
      const base = pointer(issue.path);
      if (issue.code === 'unrecognized_keys') return issue.keys.map((key) => ({ pointer: `${base}/${key}`, detail: 'unknown field' }));
      return [{ pointer: base, detail: issue.message }];
    }),
  );
}
