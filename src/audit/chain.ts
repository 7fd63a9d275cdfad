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

/**
 * The canonical JSON of an event in two parts around its seq, for an appender that assigns the
 * seq itself (PostgreSQL's `append_audit_events`): `before + seq + after` is `canonicalEvent`.
 * Keys sort as actor, at, data, request_id, seq, type.
 */
export function canonicalParts(event: Omit<AuditEventRecord, 'seq' | 'prevHash' | 'hash'>): { before: string; after: string } {
  const before =
    `{"actor":${canonicalJson(event.actor)},"at":${canonicalJson(event.at)},"data":${canonicalJson(event.data)},` +
    `"request_id":${canonicalJson(event.requestId)},"seq":`;
  return { before, after: `,"type":${canonicalJson(event.type)}}` };
}

/** hash = hex(sha256(prev_hash + canonical)) */
export const chainHash = (prevHash: string, canonical: string): string => sha256Hex(prevHash + canonical);

export type ChainVerdict = { ok: true; events: number; head: string } | { ok: false; firstBadSeq: number };

/**
 * Checks events fed in `seq` order, link by link: sequence without gaps, `prev_hash` equal to
 * the previous event's hash, and `hash` recomputed from the event's own content. It stops at
 * the first event that fails: a chain is only as good as its first broken link.
 */
export function chainVerifier() {
  let expectedSeq = 1;
  let prevHash = GENESIS_HASH;
  let firstBadSeq: number | undefined;
  return {
    /** False once the chain is broken; feed no more after that. */
    add(event: AuditEventRecord): boolean {
      if (event.seq !== expectedSeq || event.prevHash !== prevHash) firstBadSeq = expectedSeq;
      else if (chainHash(event.prevHash, canonicalEvent(event)) !== event.hash) firstBadSeq = event.seq;
      if (firstBadSeq !== undefined) return false;
      prevHash = event.hash;
      expectedSeq += 1;
      return true;
    },
    verdict(): ChainVerdict {
      return firstBadSeq === undefined ? { ok: true, events: expectedSeq - 1, head: prevHash } : { ok: false, firstBadSeq };
    },
  };
}

export function verifyChain(events: Iterable<AuditEventRecord>): ChainVerdict {
  const verifier = chainVerifier();
  for (const event of events) if (!verifier.add(event)) break;
  return verifier.verdict();
}

/**
 * Verifies the chain as stored, a page at a time, yielding between pages so a long log does
 * not hold up other requests. Works on any store, including a read-only copy (`jit audit verify --db`).
 */
export async function verifyStoredChain(
  events: { after(afterSeq: number, limit: number): Promise<AuditEventRecord[]> },
  pageSize = 5_000,
): Promise<ChainVerdict> {
  const verifier = chainVerifier();
  let afterSeq = 0;
  for (;;) {
    const page = await events.after(afterSeq, pageSize);
    for (const event of page) if (!verifier.add(event)) return verifier.verdict();
    const last = page[page.length - 1];
    if (!last || page.length < pageSize) return verifier.verdict();
    afterSeq = last.seq;
    await new Promise((resolve) => setImmediate(resolve));
  }
}
