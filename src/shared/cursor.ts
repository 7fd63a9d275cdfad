import { InvalidRequest } from './errors.js';
import { textProblem } from './well-formed.js';

/**
 * Listings page by keyset: the cursor carries the sort key of the last item returned, so pages
 * never repeat a row when new ones arrive; a new row that sorts behind the cursor is left to the
 * next reading (the issuance listing, which must miss none, also carries the chain's position).
 * It is opaque to callers (base64url JSON).
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
  // A cursor is the caller's text: its key reaches the store's queries only as keys the broker
  // gives out are, integers and text the store can hold (PostgreSQL refuses 1.5 or 1e308 as a
  // BIGINT, and a NUL in text).
  const fits = (value: unknown, type: 'string' | 'number') =>
    type === 'number' ? Number.isSafeInteger(value) : typeof value === 'string' && textProblem(value) === undefined;
  if (!Array.isArray(key) || key.length !== shape.length || key.some((v, i) => !fits(v, shape[i] as 'string' | 'number'))) {
    throw new InvalidRequest('The cursor is not one this listing gave out.', [{ pointer: '#/cursor', detail: 'invalid cursor' }]);
  }
  return key as never;
}

type KeyShape = readonly ('string' | 'number')[];
type KeyOf<T extends KeyShape> = { [K in keyof T]: T[K] extends 'number' ? number : string };

/**
 * One page of a keyset listing: the rows after the cursor's key, one more than a page read to
 * tell whether another page follows, the cursor of the next page keyed on the last row shown.
 */
export async function keysetPage<Shape extends KeyShape, Row, Item>(options: {
  cursor: string | undefined;
  shape: Shape;
  limit: number;
  read: (after: KeyOf<Shape> | undefined, count: number) => Promise<Row[]>;
  key: (row: Row) => KeyOf<Shape>;
  view: (rows: Row[]) => Item[] | Promise<Item[]>;
}): Promise<{ items: Item[]; next_cursor: string | null }> {
  const rows = await options.read(decodeCursor(options.cursor, options.shape) as KeyOf<Shape> | undefined, options.limit + 1);
  const page = rows.slice(0, options.limit);
  const tail = page[page.length - 1];
  return { items: await options.view(page), next_cursor: rows.length > options.limit && tail !== undefined ? encodeCursor(options.key(tail)) : null };
}

/** Rows a filtered listing's page may read, however few of them pass. */
export const LISTING_SCAN_BUDGET = 1_000;

/**
 * One page of a listing filtered after the query (by what the caller may see or decide), at a
 * bounded cost: it reads rows in batches after `after` and keeps those `select` gives a value
 * for, until it has `limit` of them or has read `budget` rows. A page cut short by the budget
 * may hold fewer items, even none, and still carries a `next_cursor`: the caller reads on from
 * there, and no single call reads the whole table however few rows pass.
 */
export async function scanPage<Row, Item, Key extends readonly (string | number)[]>(options: {
  read: (after: Key | undefined, count: number) => Promise<Row[]>;
  key: (row: Row) => Key;
  /**
   * For each row, the item to list, or undefined to skip it. Only the first `wanted` items are
   * used: rows past them may be given undefined, to save building what no page shows.
   */
  select: (rows: Row[], wanted: number) => Promise<(Item | undefined)[]>;
  after: Key | undefined;
  limit: number;
  budget: number;
}): Promise<{ items: Item[]; next_cursor: string | null }> {
  const { read, key, select, limit, budget } = options;
  const items: Item[] = [];
  let after = options.after;
  let scanned = 0;
  while (scanned < budget) {
    const count = Math.min(budget - scanned, Math.max(limit * 2, 100));
    const rows = await read(after, count);
    const selected = await select(rows, limit - items.length);
    for (const [i, row] of rows.entries()) {
      const item = selected[i];
      if (item === undefined) continue;
      items.push(item);
      // Full: there is a next page unless this was the very last row there is.
      if (items.length === limit) {
        const last = i === rows.length - 1 && rows.length < count;
        return { items, next_cursor: last ? null : encodeCursor(key(row)) };
      }
    }
    scanned += rows.length;
    const tail = rows[rows.length - 1];
    if (rows.length < count || !tail) return { items, next_cursor: null };
    after = key(tail);
  }
  return { items, next_cursor: after === undefined ? null : encodeCursor(after) };
}
