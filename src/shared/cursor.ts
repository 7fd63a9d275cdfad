import { InvalidRequest } from './errors.js';

/**
 * Listings page by keyset: the cursor carries the sort key of the last item returned, so pages
 * neither repeat nor skip rows when new ones arrive. It is opaque to callers (base64url JSON).
 */
export function encodeCursor(key: readonly (string | number)[]): string {
  return Buffer.from(JSON.stringify(key)).toString('base64url');
}

/** Decodes a cursor whose key has the given element types; anything else is the caller's error. */
export function decodeCursor<T extends readonly ('string' | 'number')[]>(
  cursor: string | undefined,
  shape: T,
): { [K in keyof T]: T[K] extends 'number' ? number : string } | undefined {
  if (cursor === undefined) return undefined;
  let key: unknown;
  try {
    key = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    key = undefined;
  }
  if (!Array.isArray(key) || key.length !== shape.length || key.some((v, i) => typeof v !== shape[i])) {
    throw new InvalidRequest('The cursor is not one this listing gave out.', [{ pointer: '#/cursor', detail: 'invalid cursor' }]);
  }
  return key as never;
}
