import type { AuditEntry, AuditEventRecord } from '../records.js';
import type { Pool, Query } from './client.js';

/** What an operation of a batch writes besides its rows: its audit events, appended with the batch's. */
export type Emit = (entries: readonly AuditEntry[]) => void;

interface Queued {
  work: (query: Query, emit: Emit) => Promise<unknown>;
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
  run<T>(work: (query: Query, emit: Emit) => Promise<T>): Promise<{ result: T; events: AuditEventRecord[] }>;
  /** Resolves when nothing is queued or in flight. */
  idle(): Promise<void>;
}

/** Operations per transaction at most: a longer batch holds its locks longer. */
const MAX_BATCH = 64;

/**
 * Group commit on PostgreSQL. Every transaction that appends to the audit chain holds the chain's
 * lock from its append to its commit, so transactions of single operations commit one after
 * another, a WAL flush each. One batch in flight per process, taking everything that queued
 * meanwhile, commits many operations per flush; other replicas' batches interleave at the chain.
 */
export function createBatcher(pool: Pool, append: (query: Query, entries: readonly AuditEntry[]) => Promise<AuditEventRecord[]>): Batcher {
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
      records = await pool.transaction(async (query) => {
        for (const op of batch) {
          const entries: AuditEntry[] = [];
          await query('SAVEPOINT operation');
          try {
            const result = await op.work(query, (emitted) => entries.push(...emitted));
            await query('RELEASE SAVEPOINT operation');
            done.push({ op, result, entries });
          } catch (error) {
            failed.push({ op, error });
            await query('ROLLBACK TO SAVEPOINT operation');
          }
        }
        return append(query, done.flatMap((d) => d.entries));
      });
    } catch (error) {
      // The transaction failed (a lost connection, a failed commit): nothing of it is known to be written.
      for (const { op } of done) op.reject(error);
      for (const { op, error: own } of failed) op.reject(own);
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
    run<T>(work: (query: Query, emit: Emit) => Promise<T>) {
      return new Promise<{ result: T; events: AuditEventRecord[] }>((resolve, reject) => {
        queue.push({ work, resolve: resolve as Queued['resolve'], reject });
        start();
      });
    },
    async idle() {
      while (running) await running;
    },
  };
}
