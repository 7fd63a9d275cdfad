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
 * JSON, when the caller has it already (it stores that text too).
 */
export function canonicalParts(event: Omit<ChainedEvent, 'seq'>, data: string = canonicalJson(event.data)): { before: string; after: string } {
  const before =
    `{"actor":${canonicalJson(event.actor)},"at":${canonicalJson(event.at)},"data":${data},` +
    `"request_id":${canonicalJson(event.requestId)},"seq":`;
  return { before, after: `,"type":${canonicalJson(event.type)}}` };
}

export const chainHash = (prevHash: string, canonical: string): string => sha256Hex(prevHash + canonical);
