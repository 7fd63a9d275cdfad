/**
 * A caller's recent requests, one count per second (CONTRACT section 2, `requestsPerMinute` "in
 * any 60 s"): a sliding window, not a clock minute, which would let 600 requests at 12:00:59 and
 * 600 more at 12:01:00 through, nor a token bucket, which admits up to twice its rate in one
 * minute. The store keeps one window per holder in one row, so judging and counting a request
 * costs the same however busy the caller is.
 *
 * The window holds the current second and the 60 before it. A count does not say where in its
 * second a request came, and two requests less than 60 s apart may lie 60 whole seconds apart
 * (12:00:00.999 and 12:01:00.000): with 60 seconds only, both would be admitted at the limit, and
 * twice the limit could pass within one minute. With 61 none can; a request then counts for up to
 * a second longer than a minute, which refuses, never admits, more.
 */

export const WINDOW_SECONDS = 61;

/** `counts[i]` is how many requests came in the second `second - i`; length WINDOW_SECONDS. */
export interface RateWindow {
  second: number;
  counts: number[];
}

export const emptyWindow = (second: number): RateWindow => ({ second, counts: new Array<number>(WINDOW_SECONDS).fill(0) });

/** The window as of `second`: seconds that left it dropped, the newer ones zero. */
export function slide(window: RateWindow, second: number): RateWindow {
  const shift = second - window.second;
  if (shift <= 0) return window;
  if (shift >= WINDOW_SECONDS) return emptyWindow(second);
  return { second, counts: [...new Array<number>(shift).fill(0), ...window.counts.slice(0, WINDOW_SECONDS - shift)] };
}

/** The window with one more request in `second`. */
export function record(window: RateWindow, second: number): RateWindow {
  const slid = slide(window, second);
  const counts = [...slid.counts];
  counts[0] = (counts[0] ?? 0) + 1;
  return { second: slid.second, counts };
}

/** Several holders' windows (one person under several names) as one, as of `second`. */
export function merge(windows: readonly RateWindow[], second: number): RateWindow {
  const merged = emptyWindow(second);
  for (const window of windows) slide(window, second).counts.forEach((n, i) => (merged.counts[i] = (merged.counts[i] ?? 0) + n));
  return merged;
}

export const total = (window: RateWindow): number => window.counts.reduce((sum, n) => sum + n, 0);

/**
 * Whole seconds until the window (as of its `second`) holds fewer than `limit` requests, as
 * requests leave it one second at a time: what `Retry-After` says.
 */
export function secondsUntilBelow(window: RateWindow, limit: number): number {
  let count = total(window);
  for (let wait = 1; wait <= WINDOW_SECONDS; wait += 1) {
    count -= window.counts[WINDOW_SECONDS - wait] ?? 0;
    if (count < limit) return wait;
  }
  return WINDOW_SECONDS;
}

/** The stored form: `second` and the counts, comma-separated, newest first, trailing zeros dropped. */
export function encodeWindow(window: RateWindow): string {
  let end = window.counts.length;
  while (end > 0 && window.counts[end - 1] === 0) end -= 1;
  return window.counts.slice(0, end).join(',');
}

export function decodeWindow(second: number, counts: string): RateWindow {
  const window = emptyWindow(second);
  if (counts !== '') counts.split(',', WINDOW_SECONDS).forEach((n, i) => (window.counts[i] = Number(n) || 0));
  return window;
}
