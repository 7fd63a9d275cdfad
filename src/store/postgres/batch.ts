import type { Emit } from '../engine.js';
import type { AuditEntry, AuditEventRecord } from '../records.js';
import type { Connection, Pool } from './client.js';

interface Queued {
  locks: readonly string[];
  work: (tx: Connection, emit: Emit) => Promise<unknown>;
  resolve: (value: { result: unknown; events: AuditEventRecord[] }) => void;
  reject: (error: unknown) => void;
}

export interface Batcher {
  /**
   * Runs `work` in a transaction shared with the operations queued while the previous batch was
   * committing (group commit), inside a savepoint of its own: a throw undoes its writes alone and
   * rejects with what it threw. Its events are appended to the chain with the whole batch's, last,
   * so the chain's lock is held only from that append to the commit. Resolves once committed.
   */
  run<T>(locks: readonly string[], work: (tx: Connection, emit: Emit) => Promise<T>): Promise<{ result: T; events: AuditEventRecord[] }>;
  /** Resolves when nothing is queued or in flight. */
  idle(): Promise<void>;
}

/** Operations per transaction at most: a longer batch holds its locks longer. */
const MAX_BATCH = 64;

/**
 * Takes advisory locks in one canonical order, the order of their 64-bit hashes (two names may
 * share one), so two transactions taking overlapping sets never wait on each other in a cycle.
 * PostgreSQL evaluates a volatile function of the select list after the sort.
 */
export const LOCK_SQL = 'SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest($1::text[]) k) locks ORDER BY h';

/**
 * Group commit on PostgreSQL. Every transaction that appends to the audit chain holds the chain's
 * lock from its append to its commit, so transactions of single operations commit one after
 * another, a WAL flush each. One batch in flight per process, taking everything that queued
 * meanwhile, commits many operations per flush; other replicas' batches interleave at the chain.
 * A batch holds every lock of every operation until it commits, so it takes them all first, in
 * the canonical order: two replicas' batches never deadlock, whatever their operations.
 */
export function createBatcher(pool: Pool, append: (tx: Connection, entries: readonly AuditEntry[]) => Promise<AuditEventRecord[]>): Batcher {
  let queue: Queued[] = [];
  let running: Promise<void> | undefined;

  const start = () => {
    if (running || queue.length === 0) return;
    const batch = queue.slice(0, MAX_BATCH);
    queue = queue.slice(MAX_BATCH);
    running = runBatch(batch).finally(() => {
      running = undefined;
      start();
    });
  };

  async function runBatch(batch: Queued[]): Promise<void> {
    const done: { op: Queued; result: unknown; entries: AuditEntry[] }[] = [];
    const failed: { op: Queued; error: unknown }[] = [];
    let records: AuditEventRecord[];
    try {
      records = await pool.transaction(async (tx) => {
        const locks = [...new Set(batch.flatMap((op) => op.locks))];
        if (locks.length > 0) await tx.query(LOCK_SQL, [locks]);
        for (const op of batch) {
          const entries: AuditEntry[] = [];
          await tx.query('SAVEPOINT operation');
          try {
            const result = await op.work(tx, (emitted) => void entries.push(...emitted));
            await tx.query('RELEASE SAVEPOINT operation');
            done.push({ op, result, entries });
          } catch (error) {
            failed.push({ op, error });
            await tx.query('ROLLBACK TO SAVEPOINT operation');
          }
        }
        return append(tx, done.flatMap((d) => d.entries));
      });
    } catch (error) {
      // The transaction failed (a lost connection, a failed commit): nothing of it is known to be written.
      for (const { op } of done) op.reject(error);
      for (const { op, error: own } of failed) op.reject(own);
      for (const op of batch.filter((op) => !done.some((d) => d.op === op) && !failed.some((f) => f.op === op))) op.reject(error);
      return;
    }
    for (const { op, error } of failed) op.reject(error);
    let next = 0;
    for (const { op, result, entries } of done) {
      op.resolve({ result, events: records.slice(next, next + entries.length) });
      next += entries.length;
    }
  }

  return {
    run<T>(locks: readonly string[], work: (tx: Connection, emit: Emit) => Promise<T>) {
      return new Promise<{ result: T; events: AuditEventRecord[] }>((resolve, reject) => {
        queue.push({ locks, work, resolve: resolve as Queued['resolve'], reject });
        start();
      });
    },
    async idle() {
      while (running) await running;
    },
  };
}
