import { canonicalJson, sha256Hex } from '../shared/canonical-json.js';
import type { AuditEventRecord } from '../store/records.js';

export const GENESIS_HASH = '0'.repeat(64);

/** CONTRACT section 5: the JSON of {seq, at, type, actor, request_id, data}, keys sorted, no white space. */
export function canonicalEvent(event: Omit<AuditEventRecord, 'prevHash' | 'hash'>): string {
  return canonicalJson({
    seq: event.seq,
    at: event.at,
    type: event.type,
    actor: event.actor,
    request_id: event.requestId,
    data: event.data,
  });
}

/** hash = hex(sha256(prev_hash + canonical)) */
export const chainHash = (prevHash: string, canonical: string): string => sha256Hex(prevHash + canonical);

export type ChainVerdict = { ok: true; events: number; head: string } | { ok: false; firstBadSeq: number };

/**
 * Walks events in `seq` order and checks every link: sequence without gaps, `prev_hash` equal to
 * the previous event's hash, and `hash` recomputed from the event's own content. The first event
 * that fails any of these is reported; a chain is only as good as its first broken link.
 */
export function verifyChain(events: Iterable<AuditEventRecord>): ChainVerdict {
  let expectedSeq = 1;
  let prevHash = GENESIS_HASH;
  for (const event of events) {
    if (event.seq !== expectedSeq || event.prevHash !== prevHash) return { ok: false, firstBadSeq: expectedSeq };
    if (chainHash(event.prevHash, canonicalEvent(event)) !== event.hash) return { ok: false, firstBadSeq: event.seq };
    prevHash = event.hash;
    expectedSeq += 1;
  }
  return { ok: true, events: expectedSeq - 1, head: prevHash };
}
