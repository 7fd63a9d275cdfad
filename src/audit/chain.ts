import { canonicalEvent, chainHash, GENESIS_HASH } from '../shared/chain-hash.js';
import type { AuditEventRecord } from '../store/index.js';

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
