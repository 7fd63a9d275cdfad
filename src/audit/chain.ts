import { chainHash, GENESIS_HASH, linkOf, type ChainLink } from '../shared/chain-hash.js';
import type { AuditEventRecord } from '../store/index.js';

export type ChainVerdict = { ok: true; events: number; head: string } | { ok: false; firstBadSeq: number };
/** A stretch of the chain from seq 1 already verified: its length and the hash of its last event. */
export type ChainHeadVerified = Extract<ChainVerdict, { ok: true }>;

/**
 * Checks events fed in `seq` order, link by link: sequence without gaps, `prev_hash` equal to
 * the previous event's hash, and `hash` recomputed from the event's own content. It stops at
 * the first event that fails: a chain is only as good as its first broken link.
 */
export function chainVerifier(from?: ChainHeadVerified) {
  let expectedSeq = (from?.events ?? 0) + 1;
  let prevHash = from?.head ?? GENESIS_HASH;
  let firstBadSeq: number | undefined;
  return {
    /** False once the chain is broken; feed no more after that. */
    add(link: ChainLink): boolean {
      if (link.seq !== expectedSeq || link.prevHash !== prevHash) firstBadSeq = expectedSeq;
      else if (chainHash(link.prevHash, link.canonical) !== link.hash) firstBadSeq = link.seq;
      if (firstBadSeq !== undefined) return false;
      prevHash = link.hash;
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
  for (const event of events) if (!verifier.add(linkOf(event))) break;
  return verifier.verdict();
}

/**
 * Verifies the chain as stored, a page at a time, yielding between pages so a long log does
 * not hold up other requests. Works on any store, including a read-only copy (`jit audit verify --db`).
 * Given `from`, a verdict on the chain up to some seq, it reads on from there.
 */
export async function verifyStoredChain(
  events: { links(afterSeq: number, limit: number): Promise<ChainLink[]> },
  pageSize = 5_000,
  from?: ChainHeadVerified,
): Promise<ChainVerdict> {
  const verifier = chainVerifier(from);
  let afterSeq = from?.events ?? 0;
  for (;;) {
    const page = await events.links(afterSeq, pageSize);
    for (const link of page) if (!verifier.add(link)) return verifier.verdict();
    const last = page[page.length - 1];
    if (!last || page.length < pageSize) return verifier.verdict();
    afterSeq = last.seq;
    await new Promise((resolve) => setImmediate(resolve));
  }
}
