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

/**
 * One page of a listing that is filtered after the query, by what the caller may see: reads
 * batches after `after` until more than `limit` rows pass `keep` (so a next page is known to
 * exist) or the rows run out.
 */
export function filteredPage<T, Key extends readonly (string | number)[]>(
  read: (after: Key | undefined, count: number) => T[],
  keyOf: (row: T) => Key,
  keep: (row: T) => boolean,
  after: Key | undefined,
  limit: number,
): { items: T[]; next_cursor: string | null } {
  const found: T[] = [];
  const batch = Math.max(limit * 2, 100);
  for (;;) {
    const page = read(after, batch);
    for (const row of page) {
      if (keep(row)) found.push(row);
      if (found.length > limit) break;
    }
    const last = page[page.length - 1];
    if (found.length > limit || page.length < batch || !last) break;
    after = keyOf(last);
  }
  const items = found.slice(0, limit);
  const tail = items[items.length - 1];
  return { items, next_cursor: found.length > limit && tail ? encodeCursor(keyOf(tail)) : null };
}
