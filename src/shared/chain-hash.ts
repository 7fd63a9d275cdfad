import { canonicalJson, sha256Hex } from './canonical-json.js';

/**
 * The audit chain's form (CONTRACT section 5), below the store that appends to it and the audit
 * service that verifies it: `hash = hex(sha256(prev_hash + canonical))`, where `canonical` is the
 * JSON of {seq, at, type, actor, request_id, data} with keys sorted and no white space.
 */

export const GENESIS_HASH = '0'.repeat(64);

/** An event as it is hashed. */
export interface ChainedEvent {
  seq: number;
  /** ISO 8601 UTC, exactly as hashed. */
  at: string;
  type: string;
  actor: { iss: string; sub: string } | null;
  requestId: string | null;
  data: Record<string, unknown>;
}

export function canonicalEvent(event: ChainedEvent): string {
  return canonicalJson({
    seq: event.seq,
    at: event.at,
    type: event.type,
    actor: event.actor,
    request_id: event.requestId,
    data: event.data,
  });
}

/**
 * The canonical JSON of an event in two parts around its seq, for an appender that assigns the
 * seq itself (PostgreSQL's `append_audit_events`): `before + seq + after` is `canonicalEvent`.
 * Keys sort as actor, at, data, request_id, seq, type. `data` is the event's data as canonical
 * JSON (the text the row stores). An actor with one part missing is no event's: only a stored
 * row can hold one, and its canonical form then hashes to no event's hash.
 */
export function canonicalParts(
  event: Pick<ChainedEvent, 'at' | 'type' | 'requestId'> & { actor: { iss: string | null; sub: string | null } | null },
  data: string,
): { before: string; after: string } {
  const before =
    `{"actor":${canonicalJson(event.actor)},"at":${canonicalJson(event.at)},"data":${data},` +
    `"request_id":${canonicalJson(event.requestId)},"seq":`;
  return { before, after: `,"type":${canonicalJson(event.type)}}` };
}

export const chainHash = (prevHash: string, canonical: string): string => sha256Hex(prevHash + canonical);

/** One link of the chain: its place, its hash and the previous one, and the text its hash is of. */
export interface ChainLink {
  seq: number;
  prevHash: string;
  hash: string;
  canonical: string;
}

export const linkOf = (event: ChainedEvent & { prevHash: string; hash: string }): ChainLink => ({
  seq: event.seq,
  prevHash: event.prevHash,
  hash: event.hash,
  canonical: canonicalEvent(event),
});
