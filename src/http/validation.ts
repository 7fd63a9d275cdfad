import type { z } from 'zod';
import { InvalidRequest, type FieldError } from '../shared/errors.js';
import { malformedText } from '../shared/well-formed.js';

const pointer = (path: readonly PropertyKey[]) => `#${path.map((part) => `/${String(part)}`).join('')}`;

/**
 * Parses a body or query against its schema, once; handlers use only what this returns. A
 * failure names every bad field as a JSON pointer, and unknown fields are among them.
 */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown, where: 'body' | 'query'): z.output<S> {
  // express.json leaves the body undefined when the content type is not JSON: say so plainly.
  if (where === 'body' && input === undefined) throw new InvalidRequest('The body must be JSON (Content-Type: application/json).');
  // Every text of every field, before any of it is read (JSON's \uD800 escapes make lone surrogates).
  const malformed = malformedText(input);
  if (malformed !== undefined) {
    const field = pointer(malformed);
    throw new InvalidRequest(`Invalid ${where}: ${field === '#' ? where : field.slice(2)}: must be well-formed Unicode (no lone surrogates)`, [
      { pointer: field, detail: 'must be well-formed Unicode (no lone surrogates)' },
    ]);
  }
  const result = schema.safeParse(input ?? {});
  if (result.success) return result.data;
  const errors: FieldError[] = result.error.issues.flatMap((issue) => {
    const base = pointer(issue.path);
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((key) => ({ pointer: `${base === '#' ? '#' : base}/${key}`, detail: 'unknown field' }));
    }
    return [{ pointer: base, detail: issue.message }];
  });
  const summary = errors.map((e) => `${e.pointer === '#' ? where : e.pointer.slice(2)}: ${e.detail}`).join('; ');
  throw new InvalidRequest(`Invalid ${where}: ${summary}`, errors);
}
