import type pg from 'pg';
import { textProblem } from '../../shared/well-formed.js';
import type { Emit, Sql } from '../engine.js';
import type { AuditEntry, AuditEventRecord } from '../records.js';
import { failure, type Pool, type Session } from './client.js';
import { fill, literal, literals, NulInText, numbered } from './literal.js';
import { conflictOf, retryConflicts, type OnConflict } from './retry.js';

export type Work<T> = (sql: Sql, emit: Emit) => Promise<T>;

interface Queued {
  locks: readonly string[];
  work: Work<unknown>;
  resolve: (value: { result: unknown; events: AuditEventRecord[] }) => void;
  reject: (error: unknown) => void;
}

/** An operation's statement: its text with `?` placeholders, and its values written as SQL literals. */
export interface Statement {
  text: string;
  literals: readonly string[];
}

/** How a batch's events reach the chain: the statement that appends them, and what its rows say of them. */
export interface ChainAppend {
  (entries: readonly AuditEntry[]): { statement: Statement; records(rows: readonly Record<string, unknown>[]): AuditEventRecord[] };
}

export interface Batcher {
  /**
   * Runs `work` in a transaction shared with the operations queued while the previous batch was
   * committing (group commit): all-or-nothing on its own (a throw undoes its writes alone and
   * rejects with what it threw), its events appended to the chain with the whole batch's, last.
   * Resolves once committed.
   */
  run<T>(locks: readonly string[], work: Work<T>): Promise<{ result: T; events: AuditEventRecord[] }>;
  /** Resolves when nothing is queued or in flight. */
  idle(): Promise<void>;
}

/**
 * Operations per transaction at most: a longer batch holds its locks longer, and each operation
 * of the slow path is a subtransaction (beyond 64 a transaction's subtransactions overflow the
 * cache every other session's snapshot reads).
 */
const MAX_BATCH = 64;

/**
 * Takes advisory locks in one canonical order, the order of their 64-bit hashes (two names may
 * share one), so two transactions taking overlapping sets never wait on each other in a cycle.
 * PostgreSQL evaluates a volatile function of the select list after the sort.
 */
export const LOCK_SQL = 'SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest($1::text[]) k) locks ORDER BY h';
/** LOCK_SQL taking its keys as one literal (an array of text literals: a `$'` or `$&` in a key stays text). */
export const lockStatement = (keys: readonly string[]): Statement => ({ text: LOCK_SQL.replace('$1', '?'), literals: [`ARRAY[${keys.map(literal).join(', ')}]`] });

/**
 * Why events cannot join the chain as they are: text of a column of their own (type, actor,
 * request) holding a NUL or a lone surrogate, which the append's jsonb refuses, failing the
 * batch's commit and every operation of it. Their data goes as canonical JSON, escaped.
 */
function unchainable(entries: readonly AuditEntry[]): NulInText | undefined {
  for (const entry of entries) {
    for (const text of [entry.type, entry.actor?.iss, entry.actor?.sub, entry.requestId]) {
      if (typeof text === 'string' && textProblem(text) !== undefined) return new NulInText(text.includes('\0') ? '0x00' : 'a lone surrogate');
    }
  }
  return undefined;
}

/** Rejects the statements of a run given up on: what they would have answered no longer matters. */
class Abandoned extends Error {}

/** One run of one queued operation's work. */
interface Run {
  op: Queued;
  entries: AuditEntry[];
  /** Its statements sent or queued and not yet answered. */
  waiting: number;
  /** A statement of it changed a row: a throw then needs a rollback. */
  wrote: boolean;
  settled?: { result: unknown } | { error: unknown };
  /** Its events as the chain recorded them, once committed. */
  events?: AuditEventRecord[];
}

/** Runs that ended, or why they were given up: a statement failed, or one threw after writing. */
interface Rounds {
  runs: Run[];
  failed?: unknown;
  undo?: boolean;
}

/** Statement texts one connection prepares at most: beyond, new texts are sent written out. */
const MAX_PREPARED = 500;
/** Names of prepared statements, never reused: one whose PREPARE may not have run is forgotten, not renamed. */
let preparedNames = 0;

/**
 * A session whose next round trip starts with `prefix` (BEGIN, the locks, savepoints), its
 * results left out. An operation's statement goes as EXECUTE of a statement its connection
 * prepared the first time it met the text (in the same round trip), so PostgreSQL parses and
 * plans each kind of statement once per connection rather than at every request.
 */
class Transaction {
  readonly prefix: (string | Statement)[] = [];
  constructor(readonly session: Session) {}
  async send(statements: readonly (string | Statement)[]): Promise<pg.QueryResult[]> {
    const { prepared } = this.session;
    const texts: string[] = [];
    /** Which results answer `statements`: not those of the prefix, nor of a PREPARE. */
    const answers: number[] = [];
    const fresh: string[] = [];
    const add = (statement: string | Statement, answered: boolean) => {
      let text: string;
      if (typeof statement === 'string' || statement.literals.length === 0) {
        text = typeof statement === 'string' ? statement : statement.text;
      } else {
        let name = prepared.get(statement.text);
        if (name === undefined && prepared.size < MAX_PREPARED) {
          name = `jit_${(preparedNames += 1)}`;
          texts.push(`PREPARE ${name} AS ${numbered(statement.text)}`);
          prepared.set(statement.text, name);
          fresh.push(statement.text);
        }
        text = name === undefined ? fill(statement.text, statement.literals) : `EXECUTE ${name}(${statement.literals.join(', ')})`;
      }
      const at = texts.push(text) - 1;
      if (answered) answers.push(at);
    };
    for (const statement of this.prefix.splice(0)) add(statement, false);
    for (const statement of statements) add(statement, true);
    let results: pg.QueryResult[];
    try {
      results = await this.session.send(texts);
    } catch (error) {
      // A PREPARE after the statement that failed never ran.
      for (const text of fresh) prepared.delete(text);
      throw error;
    }
    return answers.map((i) => results[i] as pg.QueryResult);
  }
  /** Takes back `statement` if it is still the last of the prefix (nothing was sent since it was added). */
  unsent(statement: string): boolean {
    if (this.prefix[this.prefix.length - 1] !== statement) return false;
    this.prefix.pop();
    return true;
  }
}

/**
 * Runs operations at once whose locks do not overlap, sending their statements together: each
 * round trip carries every statement the operations issued since the last, and goes once none of
 * them can get further without an answer. Operations on distinct holders touch distinct rows
 * (every row a transaction writes is covered by a lock it names), so running them interleaved is
 * running them one after the other. A throw from an operation that wrote nothing costs the
 * others nothing; one that wrote, or a failed statement, gives them all up (`undo`, `failed`).
 */
function together(tx: Transaction, ops: readonly Queued[]): Promise<Rounds> {
  return new Promise((resolve) => {
    const runs: Run[] = ops.map((op) => ({ op, entries: [], waiting: 0, wrote: false }));
    let queued: { run: Run; statement: Statement; kind: 'all' | 'get' | 'run'; resolve(value: unknown): void; reject(error: unknown): void }[] = [];
    let inFlight = false;
    let stop: { failed: unknown } | { undo: true } | undefined;
    let checking = false;
    let ended = false;

    // After every change, once the operations have run as far as they can (a microtask later):
    // send what they queued, or end.
    const check = () => {
      if (checking) return;
      checking = true;
      queueMicrotask(() => {
        checking = false;
        if (inFlight || ended) return;
        if (stop) {
          ended = true;
          for (const statement of queued.splice(0)) statement.reject(new Abandoned());
          resolve({ runs, ...stop });
          return;
        }
        if (runs.some((run) => run.settled === undefined && run.waiting === 0)) return; // still computing
        if (queued.length > 0) flush();
        else if (runs.every((run) => run.settled !== undefined)) {
          ended = true;
          resolve({ runs });
        }
      });
    };

    const flush = () => {
      const round = queued;
      queued = [];
      inFlight = true;
      tx.send(round.map((sent) => sent.statement)).then(
        (results) => {
          inFlight = false;
          round.forEach((sent, i) => {
            const result = results[i] as pg.QueryResult;
            sent.run.waiting -= 1;
            if (result.command !== 'SELECT' && (result.rowCount ?? 0) > 0) sent.run.wrote = true;
            sent.resolve(sent.kind === 'all' ? result.rows : sent.kind === 'get' ? result.rows[0] : (result.rowCount ?? 0));
          });
          check();
        },
        (error: unknown) => {
          inFlight = false;
          stop ??= { failed: error };
          for (const sent of [...round, ...queued]) sent.reject(new Abandoned());
          queued = [];
          check();
        },
      );
    };

    const sqlOf = (run: Run): Sql => {
      const statement = (kind: 'all' | 'get' | 'run', text: string, params: readonly unknown[]) =>
        new Promise<unknown>((resolveStatement, rejectStatement) => {
          if (stop) return rejectStatement(new Abandoned());
          let written: string[];
          try {
            written = literals(text, params);
          } catch (error) {
            return rejectStatement(failure(error));
          }
          run.waiting += 1;
          queued.push({ run, statement: { text, literals: written }, kind, resolve: resolveStatement, reject: rejectStatement });
          check();
        });
      return {
        all: <T>(text: string, params: readonly unknown[] = []) => statement('all', text, params) as Promise<T[]>,
        get: <T>(text: string, params: readonly unknown[] = []) => statement('get', text, params) as Promise<T | undefined>,
        run: (text, params = []) => statement('run', text, params) as Promise<number>,
      };
    };

    for (const run of runs) {
      const emit: Emit = (entries) => void run.entries.push(...entries);
      Promise.resolve()
        .then(() => run.op.work(sqlOf(run), emit))
        .then(
          (result) => {
            if (ended) return; // given up on: its outcome is the caller's to set
            const unfit = unchainable(run.entries);
            if (unfit === undefined) run.settled = { result };
            else {
              // Its failure alone, as a statement of its own that failed: its writes undone.
              run.settled = { error: failure(unfit) };
              if (run.wrote || run.waiting > 0) stop ??= { undo: true };
            }
            check();
          },
          (error: unknown) => {
            if (ended) return;
            run.settled = { error };
            // Its writes, or statements still unanswered that may write, cannot be undone alone.
            if (!(error instanceof Abandoned) && (run.wrote || run.waiting > 0)) stop ??= { undo: true };
            check();
          },
        );
    }
    check();
  });
}

/**
 * Group commit on PostgreSQL, in few round trips. One batch in flight per process takes what
 * queued meanwhile (up to MAX_BATCH operations) into one transaction:
 *
 * 1. BEGIN, every lock of every operation at once in the canonical order (so two replicas'
 *    batches never wait on each other in a cycle), and a savepoint, travel with the first
 *    statements of the operations.
 * 2. Operations whose locks do not overlap run at once (`together`): typically one round trip
 *    for the facts of all of them, one for all their writes. Operations sharing a lock with an
 *    earlier one run after it, in queue order.
 * 3. Should a statement fail, or an operation throw after writing, the batch goes back to its
 *    savepoint and runs its operations one at a time, each in a savepoint of its own, so the
 *    failure is that operation's alone (the store's decisions are pure: running one again
 *    decides the same).
 * 4. The events of the operations that succeeded go to the chain with COMMIT, in one round trip:
 *    `append_audit_events` takes the chain's lock, the last lock any transaction takes, and it is
 *    held only while PostgreSQL appends and commits, never across a round trip to the broker.
 *
 * A deadlock or a serialization failure runs the whole batch again (retry.ts).
 */
export function createBatcher(pool: Pool, append: ChainAppend, onConflict: OnConflict): Batcher {
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

  /** One try of a batch: how each operation ended, once committed; throws when the transaction failed. */
  async function attempt(session: Session, batch: readonly Queued[], own: Map<Queued, unknown>): Promise<Run[]> {
    own.clear();
    const tx = new Transaction(session);
    const locks = [...new Set(batch.flatMap((op) => op.locks))];
    tx.prefix.push('BEGIN', ...(locks.length > 0 ? [lockStatement(locks)] : []), 'SAVEPOINT batch');

    let runs = await inWaves(tx, batch);
    if (!Array.isArray(runs)) {
      const { failed } = runs;
      if (failed !== undefined && conflictOf(failed)) throw failed;
      try {
        await tx.send(['ROLLBACK TO SAVEPOINT batch']);
      } catch (error) {
        // The failure was BEGIN's or the locks' (no savepoint yet), or the connection's: the batch's.
        throw failed ?? error;
      }
      runs = await oneByOne(tx, batch);
    }
    for (const run of runs) if (run.settled && 'error' in run.settled) own.set(run.op, run.settled.error);

    const done = runs.filter((run) => run.settled && 'result' in run.settled);
    const entries = done.flatMap((run) => run.entries);
    tx.unsent('SAVEPOINT batch');
    if (tx.prefix[0] === 'BEGIN' && entries.length === 0) return runs; // nothing was sent, nothing to append
    const chain = entries.length > 0 ? append(entries) : undefined;
    const results = await tx.send([...(chain ? [chain.statement] : []), 'COMMIT']);
    const records = chain ? chain.records((results[0] as pg.QueryResult).rows) : [];
    let next = 0;
    for (const run of done) {
      run.events = records.slice(next, next + run.entries.length);
      next += run.entries.length;
    }
    return runs;
  }

  /** The fast path: waves of operations whose locks do not overlap, each wave run together. */
  async function inWaves(tx: Transaction, batch: readonly Queued[]): Promise<Run[] | Rounds> {
    const waves: Queued[][] = [];
    const lastWave = new Map<string, number>();
    for (const op of batch) {
      const wave = op.locks.reduce((after, key) => Math.max(after, (lastWave.get(key) ?? -1) + 1), 0);
      (waves[wave] ??= []).push(op);
      for (const key of op.locks) lastWave.set(key, wave);
    }
    const runs: Run[] = [];
    for (const wave of waves) {
      const rounds = await together(tx, wave);
      if (rounds.failed !== undefined || rounds.undo) return rounds;
      runs.push(...rounds.runs);
    }
    return runs;
  }

  /** The slow path: one operation at a time, each in a savepoint, so a failure undoes its writes alone. */
  async function oneByOne(tx: Transaction, batch: readonly Queued[]): Promise<Run[]> {
    const runs: Run[] = [];
    for (const op of batch) {
      tx.prefix.push('SAVEPOINT operation');
      const rounds = await together(tx, [op]);
      const run = rounds.runs[0] as Run;
      if (rounds.failed !== undefined) {
        if (conflictOf(rounds.failed)) throw rounds.failed;
        // Its statement failed, the transaction waits for the rollback to its savepoint.
        await tx.send(['ROLLBACK TO SAVEPOINT operation', 'RELEASE SAVEPOINT operation']);
        run.settled = { error: failure(rounds.failed) };
      } else if (!tx.unsent('SAVEPOINT operation')) {
        const undo = rounds.undo === true || (run.settled !== undefined && 'error' in run.settled);
        tx.prefix.push(...(undo ? ['ROLLBACK TO SAVEPOINT operation'] : []), 'RELEASE SAVEPOINT operation');
      }
      runs.push(run);
    }
    return runs;
  }

  async function runBatch(batch: Queued[]): Promise<void> {
    const own = new Map<Queued, unknown>();
    let runs: Run[];
    try {
      runs = await retryConflicts(() => pool.session((session) => attempt(session, batch, own)), onConflict);
    } catch (error) {
      // The transaction failed (a lost connection, a failed commit): nothing of it is known to be
      // written. An operation that had failed on its own still answers with its own failure.
      for (const op of batch) op.reject(own.get(op) ?? failure(error));
      return;
    }
    for (const run of runs) {
      const settled = run.settled as { result: unknown } | { error: unknown };
      if ('error' in settled) run.op.reject(settled.error);
      else run.op.resolve({ result: settled.result, events: run.events ?? [] });
    }
  }

  return {
    run<T>(locks: readonly string[], work: Work<T>) {
      return new Promise<{ result: T; events: AuditEventRecord[] }>((resolve, reject) => {
        // A name no literal can write (a NUL) fails this operation here: written into the batch's
        // one lock statement, it would fail every operation of the batch.
        try {
          for (const key of locks) literal(key);
        } catch (error) {
          reject(failure(error));
          return;
        }
        queue.push({ locks, work, resolve: resolve as Queued['resolve'], reject });
        start();
      });
    },
    async idle() {
      while (running) await running;
    },
  };
}
