import type { AuditEntry, AuditEventRecord } from './records.js';

/**
 * What each database engine gives the store (`sqlite/`, `postgres/`): statements, transactions
 * and the audit chain's append, each made atomic its own way. The store's SQL is written once,
 * above this line, and runs unchanged on both.
 */

/**
 * A connection or a transaction. Statements use `?` placeholders on every engine, in order of
 * appearance (PostgreSQL's engine numbers them); booleans bind as the engine stores them.
 */
export interface Sql {
  all<T>(text: string, params?: readonly unknown[]): Promise<T[]>;
  get<T>(text: string, params?: readonly unknown[]): Promise<T | undefined>;
  /** A write; resolves to the number of rows it changed. */
  run(text: string, params?: readonly unknown[]): Promise<number>;
}

/** The few words the engines spell differently. */
export interface Dialect {
  /** Boolean literals as the engine's partial indexes are written (SQLite: 1 and 0). */
  readonly true: string;
  readonly false: string;
  /** An expression the planner must not answer from an index (SQLite: unary `+`). */
  unindexed(expression: string): string;
  /**
   * Locks the selected rows of `table` for this transaction, skipping rows another transaction
   * holds, so replicas split due work between them (nothing on SQLite, where one writer runs).
   */
  skipLocked(table?: string): string;
}

/** What an operation appends to the audit chain besides its rows: appended with its batch's, last. */
export type Emit = (entries: readonly AuditEntry[]) => void;

/** What maintenance may do besides statements. */
export interface Maintenance {
  /** Appends events to the chain at once, in this transaction. */
  append(entries: readonly AuditEntry[]): Promise<AuditEventRecord[]>;
  /**
   * For each set of lock names, takes them when no other transaction holds any of them, never
   * waiting: true where all were taken. Sweeps claim each due record (with the holders its change
   * touches) this way, so replicas split the due work and a sweep never waits on a request being
   * served, nor a request on a sweep in a cycle.
   */
  claim(sets: readonly (readonly string[])[]): Promise<boolean[]>;
}

export interface Engine {
  readonly name: 'sqlite' | 'postgres';
  readonly dialect: Dialect;
  /** Reads of what is committed, outside any operation. */
  readonly read: Sql;
  /**
   * Whether operations need to name what they lock (PostgreSQL, where replicas run at once);
   * SQLite's one writer holds the whole database, so the store skips finding out.
   */
  readonly lockByName: boolean;
  /**
   * One atomic operation, group-committed with others: `locks` are taken first (every lock of a
   * batch in one canonical order, so batches of two replicas never wait on each other in a
   * cycle), then `work` runs in a savepoint of its own; a throw undoes its writes alone and
   * rejects with what it threw. Its emitted events are appended with the batch's. Resolves once
   * the commit is durable.
   */
  operate<T>(locks: readonly string[], work: (sql: Sql, emit: Emit) => Promise<T>): Promise<{ result: T; events: AuditEventRecord[] }>;
  /**
   * Maintenance in a transaction of its own (sweeps, keys, conditional appends), under the named
   * lock when given. Resolves once the commit is durable, with every commit before it.
   */
  maintain<T>(lock: string | undefined, work: (sql: Sql, maintenance: Maintenance) => Promise<T>): Promise<T>;
  /** Throws `Unavailable` unless the engine can take a write now. */
  probe(): Promise<void>;
  close(): Promise<void>;
}
