import type { BrokerClient } from './client.js';
import type { CliIo } from './cli-io.js';
import { CliError, shown, shownJson } from './io.js';
import { truncate } from '../shared/well-formed.js';

/** A listing's page, as every `/v1` listing answers. */
interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

/**
 * Reads a listing: its first page, or with `all` every page. `more` says whether pages were left.
 * A cursor the broker gives again (a broken or hostile one) would have it read for ever: refused.
 * A page with no items and a new cursor is read on from, as the broker's filtered listings give.
 */
export async function readListing<T>(client: BrokerClient, path: string, query: URLSearchParams, all: boolean): Promise<{ items: T[]; more: boolean }> {
  const items: T[] = [];
  const followed = new Set<string>();
  let cursor: string | null = null;
  do {
    if (cursor) {
      if (followed.has(cursor)) throw new CliError(`the broker's listing ${path} did not end: it gave again the cursor of a page already read; nothing is printed`);
      followed.add(cursor);
    }
    const params = new URLSearchParams(query);
    if (cursor) params.set('cursor', cursor);
    const search = params.toString();
    const page: Page<T> = await client.get(`${path}${search ? `?${search}` : ''}`);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor && all);
  return { items, more: cursor !== null };
}

/** Prints a listing: the broker's objects as a JSON array with --json, else a table. */
export function printListing<T>(
  io: CliIo,
  listing: { items: T[]; more: boolean },
  options: { json: boolean; header: string[]; row: (item: T) => string[]; empty: string },
): void {
  if (options.json) io.stdout(`${shownJson(listing.items)}\n`);
  else if (listing.items.length === 0) io.stderr(`${options.empty}\n`);
  else io.stdout(table([options.header, ...listing.items.map(options.row)]));
  if (listing.more) io.stderr('more rows: add --all\n');
}

/**
 * Columns padded to their widest cell; each cell one line, made safe for the terminal, cut at 48
 * with a mark: a requester writes the justification and the task, and a cut that did not show
 * would let the start of them pass for the whole (a scope listed last, likewise).
 */
export function table(rows: string[][]): string {
  const cells = rows.map((row) => row.map((cell) => truncate(shown(cell.replace(/\s+/g, ' ')), 48, '…')));
  const widths = cells[0]?.map((_, i) => Math.max(...cells.map((row) => (row[i] ?? '').length))) ?? [];
  return cells.map((row) => row.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n') + '\n';
}

/** The query of a listing from the flags given (unset ones left out). */
export function query(params: Record<string, string | undefined>): URLSearchParams {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value !== undefined) search.set(key, value);
  return search;
}
