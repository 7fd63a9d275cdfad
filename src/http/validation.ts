import type { z } from 'zod';
import { InvalidRequest, type FieldError } from '../shared/errors.js';

/**
 * Parses a body or query against its schema, once; handlers use only what this returns. A
 * failure names every bad field as a JSON pointer, and unknown fields are among them.
 */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown, where: 'body' | 'query'): z.output<S> {
  // express.json leaves the body undefined when the content type is not JSON: say so plainly.
  if (where === 'body' && input === undefined) throw new InvalidRequest('The body must be JSON (Content-Type: application/json).');
  const result = schema.safeParse(input ?? {});
  if (result.success) return result.data;
  const errors: FieldError[] = result.error.issues.flatMap((issue) => {
    const base = `#${issue.path.map((part) => `/${String(part)}`).join('')}`;
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((key) => ({ pointer: `${base === '#' ? '#' : base}/${key}`, detail: 'unknown field' }));
    }
    return [{ pointer: base, detail: issue.message }];
  });
  const summary = errors.map((e) => `${e.pointer === '#' ? where : e.pointer.slice(2)}: ${e.detail}`).join('; ');
  throw new InvalidRequest(`Invalid ${where}: ${summary}`, errors);
}
