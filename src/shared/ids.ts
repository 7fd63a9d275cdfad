import { randomUUID } from 'node:crypto';

/**
 * A UUIDv7 (RFC 9562): 48 bits of milliseconds, then random bits. Request ids and token jtis
 * are these rather than random v4 UUIDs so that new rows land at the end of their indexes: a
 * batch of inserts then dirties a few pages instead of one page per row, which is what each
 * commit must write. The time they reveal is already in the request and the token.
 *
 * Built from a v4 UUID (randomUUID draws from a cached pool of entropy, where randomBytes is a
 * call per id): its first 48 bits become the time and its version nibble 7; its variant bits are
 * already RFC 9562's, and 74 random bits remain.
 */
export function uuidv7(now: number = Date.now()): string {
  const random = randomUUID();
  const time = now.toString(16).padStart(12, '0');
  return `${time.slice(0, 8)}-${time.slice(8, 12)}-7${random.slice(15)}`;
}

const REQUEST_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Whether `text` has the shape of the ids the broker gives requests (lowercase UUIDs): anything else names none. */
export const isRequestId = (text: string): boolean => REQUEST_ID.test(text);
