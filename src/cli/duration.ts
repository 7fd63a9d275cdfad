import ms from 'ms';
import { usage } from './errors.js';

/**
 * Durations as every flag takes them: `30s`, `5m`, `1h`, `7d` (anything `ms` reads), and a bare
 * whole number as seconds, as `--ttl` always took it.
 */
export function parseDuration(text: string, flag: string): number {
  // ms throws on an empty text (`--wait ""`) rather than answering undefined.
  const value = /^\d+$/.test(text) ? Number(text) * 1000 : text === '' ? undefined : ms(text as ms.StringValue);
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw usage(`${flag} ${text} is not a duration such as 30s, 5m or 1h`);
  return value;
}

/** A token lifetime in whole seconds, at least one. */
export function parseTtlSeconds(text: string, flag = '--ttl'): number {
  const value = parseDuration(text, flag);
  if (value < 1000 || value % 1000 !== 0) throw usage(`${flag} ${text} must be whole seconds, at least 1s`);
  return value / 1000;
}

/**
 * A point in time: an ISO 8601 time (`2026-12-01`, `2026-12-01T10:00:00Z`), or a duration with
 * its unit meaning that long ago (`--since 1h`). Answered as the ISO UTC text the API takes.
 */
export function parseTime(text: string, flag: string, now = Date.now()): string {
  if (/^\d{4}-\d{2}-\d{2}/.test(text)) {
    const at = Date.parse(text);
    if (Number.isNaN(at)) throw usage(`${flag} ${text} is not a time such as 2026-12-01T10:00:00Z`);
    return new Date(at).toISOString();
  }
  if (!/^\d/.test(text) || /^\d+$/.test(text)) throw usage(`${flag} ${text} is neither an ISO 8601 time nor a duration ago such as 1h or 7d`);
  return new Date(now - parseDuration(text, flag)).toISOString();
}
