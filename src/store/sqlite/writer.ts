import { closeSync, fdatasync, openSync } from 'node:fs';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { Unavailable } from '../../shared/errors.js';
import type { Db } from './database.js';

interface Queued {
  work: () => Promise<unknown>;
  rollback: boolean;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

export interface Writer {
  /**
   * Runs `work` in a write transaction shared with the other operations queued in the same turn
   * of the event loop (group commit), and resolves once the shared commit is durable. Each
   * operation stays all-or-nothing: it runs inside its own savepoint, and a throw rolls back its
   * writes alone and rejects its promise with what it threw. With `rollback`, its writes are
   * undone even when it succeeds (a probe that the store can write). `beforeCommit` runs last in
   * the transaction, with the values of the operations that succeeded (the chain's append).
   */
  run<T>(work: () => Promise<T>, options?: { rollback?: boolean }): Promise<T>;
  /**
   * When the last batch failed to commit (ms), or undefined: a store that cannot write is not
   * ready. After a failed sync it stays failed: the kernel may have dropped the pages it could
   * not write and will not say so twice, so nothing written since can be called durable.
   */
  lastFailure(): number | undefined;
  /** Commits what is queued; further `run` calls are refused. */
  close(): Promise<void>;
}

/** How long operations wait for another process to release the write lock before they fail (503). */
export const LOCK_WAIT_MS = 5_000;
/** How often the lock is tried again meanwhile. */
const LOCK_RETRY_MS = 1;

export const storeFailure = (error: unknown) =>
  new Unavailable('The broker could not record this change; nothing was granted. Try again shortly.', {
    cause: error,
    internal: { sqlite: (error as { code?: string }).code, message: (error as Error).message },
  });

export const isBusy = (error: unknown) => error instanceof Database.SqliteError && error.code.startsWith('SQLITE_BUSY');

/**
 * Group commit on one better-sqlite3 connection. A batch is every operation queued while the
 * last one was being written, committed together. Operations are promises only in form: their
 * statements run synchronously, so a batch runs from BEGIN to COMMIT without yielding to I/O,
 * and reads never see it half done. The connection runs synchronous=NORMAL, so COMMIT only
 * writes the WAL; what synchronous=FULL would do inside it, on the event loop, is done after it
 * on libuv's thread pool (`sync`, an fdatasync of the WAL), and a batch's callers hear back only
 * once that is done. The next batch commits after that: the requests that arrive meanwhile are
 * served up to their writes by the free event loop, and then share one commit and one sync, as
 * many as a blocking sync would have gathered. When another process holds the write lock, the
 * batch waits on a timer, not in SQLite's busy handler, which would stall this process's event
 * loop; operations arriving meanwhile join it.
 */
export function createWriter(
  db: Db,
  clock: () => number,
  beforeCommit: (values: unknown[]) => void = () => {},
  sync: Sync = walSync(db),
): Writer {
  let queue: Queued[] = [];
  let scheduled = false;
  let flushing: Promise<void> | undefined;
  let closed = false;
  let failedAt: number | undefined;
  /** A sync that failed: every later write is refused (see lastFailure). */
  let unsynced: unknown;
  let waitingSince: number | undefined;
  // Each operation's savepoint copies every page it first touches to a statement journal, which
  // SQLite moves to a temporary file past 64 KB: an issuance touches more, and those copies were
  // the costliest part of its writes (a pwrite per page). In memory, the journal lives only until
  // the operation's RELEASE. This connection only writes, in operations of bounded size; queries
  // that could build large temporary tables run on the reader, whose temp_store stays on disk (as
  // does a read-only connection's, which writes nothing).
  if (!db.readonly) db.pragma('temp_store = MEMORY');
  const statements = {
    begin: db.prepare('BEGIN IMMEDIATE'),
    commit: db.prepare('COMMIT'),
    rollback: db.prepare('ROLLBACK'),
    savepoint: db.prepare('SAVEPOINT operation'),
    release: db.prepare('RELEASE operation'),
    undo: db.prepare('ROLLBACK TO operation'),
  };

  const schedule = (delayMs?: number) => {
    if (scheduled) return;
    scheduled = true;
    const go = () => {
      scheduled = false;
      flushing ??= flush().finally(() => {
        flushing = undefined;
        if (queue.length > 0) schedule();
      });
    };
    // setImmediate, not a microtask: requests whose I/O completes in this turn join the batch.
    if (delayMs === undefined) setImmediate(go);
    else setTimeout(go, delayMs);
  };

  async function flush(): Promise<void> {
    if (queue.length === 0) return;
    if (unsynced !== undefined) {
      // Queued while that sync ran: a later sync may report clean what the kernel dropped.
      const refused = queue;
      queue = [];
      for (const op of refused) op.reject(storeFailure(unsynced));
      return;
    }
    try {
      statements.begin.run();
    } catch (error) {
      waitingSince ??= clock();
      if (isBusy(error) && !closed && clock() - waitingSince < LOCK_WAIT_MS) {
        schedule(LOCK_RETRY_MS);
        return;
      }
      // Another process held the write lock too long, or the file is unusable.
      waitingSince = undefined;
      failedAt = clock();
      const failed = queue;
      queue = [];
      for (const op of failed) op.reject(storeFailure(error));
      return;
    }
    waitingSince = undefined;
    const batch = queue;
    queue = [];
    const done: { op: Queued; value: unknown }[] = [];
    for (const [i, op] of batch.entries()) {
      try {
        statements.savepoint.run();
      } catch (error) {
        abort(error, [...done.map((d) => d.op), ...batch.slice(i)]);
        return;
      }
      try {
        const value = await op.work();
        if (op.rollback) statements.undo.run();
        statements.release.run();
        done.push({ op, value });
      } catch (error) {
        try {
          statements.undo.run();
          statements.release.run();
        } catch (rollbackError) {
          // The transaction itself is gone (SQLite aborts it on some I/O errors): nothing commits.
          abort(rollbackError, [...done.map((d) => d.op), ...batch.slice(i)]);
          return;
        }
        op.reject(error instanceof Database.SqliteError ? storeFailure(error) : error);
      }
    }
    try {
      beforeCommit(done.map((d) => d.value));
      statements.commit.run();
    } catch (error) {
      abort(error, done.map((d) => d.op));
      return;
    }
    try {
      await sync.run();
    } catch (error) {
      unsynced ??= error;
      failedAt = clock();
      // Committed, perhaps even on disk: a record without its answer, never an answer without its record.
      for (const { op } of done) op.reject(storeFailure(error));
      return;
    }
    if (unsynced === undefined) failedAt = undefined;
    for (const { op, value } of done) op.resolve(value);
  }

  function abort(error: unknown, ops: Queued[]): void {
    failedAt = clock();
    if (db.inTransaction) {
      try {
        statements.rollback.run();
      } catch {
        // Already rolled back by SQLite.
      }
    }
    for (const op of ops) op.reject(storeFailure(error));
  }

  return {
    run<T>(work: () => Promise<T>, options: { rollback?: boolean } = {}): Promise<T> {
      if (closed) return Promise.reject(storeFailure(new Error('the store is closed')));
      if (unsynced !== undefined) return Promise.reject(storeFailure(unsynced));
      return new Promise<T>((resolve, reject) => {
        queue.push({ work, rollback: options.rollback ?? false, resolve: resolve as (value: unknown) => void, reject });
        schedule();
      });
    },
    lastFailure: () => failedAt,
    async close() {
      closed = true;
      while (flushing) await flushing;
      await flush();
      sync.close();
    },
  };
}

/** Makes what this connection committed durable; `close` when the writer is done with it. */
export interface Sync {
  run(): Promise<void>;
  close(): void;
}

/**
 * Takes the WAL's durability over from SQLite: the connection goes to synchronous=NORMAL (COMMIT
 * writes the WAL, syncs nothing), and `run` is an fdatasync of the WAL file on libuv's thread
 * pool. The file is opened once: it stays the same file while this connection is open (SQLite
 * removes it only when the last connection closes). Nothing to sync in memory or read-only.
 * `datasync` is node's fdatasync; a test hands in one that records what it was asked to sync.
 */
export function walSync(db: Db, datasync: (fd: number) => Promise<void> = promisify(fdatasync)): Sync {
  if (db.memory || db.readonly) return { run: async () => {}, close: () => {} };
  db.pragma('synchronous = NORMAL');
  const fd = openSync(`${db.name}-wal`, 'r');
  return { run: () => datasync(fd), close: () => closeSync(fd) };
}
