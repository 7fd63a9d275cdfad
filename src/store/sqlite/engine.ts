import { statfsSync } from 'node:fs';
import { dirname } from 'node:path';
import type Database from 'better-sqlite3';
import { canonicalJson } from '../../shared/canonical-json.js';
import { canonicalParts, chainHash, GENESIS_HASH } from '../../shared/chain-hash.js';
import { toIso, type Clock } from '../../shared/clock.js';
import { Unavailable } from '../../shared/errors.js';
import type { Dialect, Engine, Sql } from '../engine.js';
import type { AuditEntry, AuditEventRecord } from '../records.js';
import type { Db } from './database.js';
import { startCheckpointer } from './checkpointer.js';
import { createWriter, walSync } from './writer.js';

const EVENTS_PER_STATEMENT = 500;
/** Below this much free space a commit may fail half-way through a batch: not ready. */
const MIN_FREE_BYTES = 16 * 1024 * 1024;

const dialect: Dialect = {
  true: '1',
  false: '0',
  unindexed: (expression) => `+${expression}`,
  // One writer holds the whole database: nothing to skip.
  skipLocked: () => '',
};

/** better-sqlite3 binds no booleans: STRICT tables keep them as 0 and 1. */
const bindable = (params: readonly unknown[]) => params.map((p) => (typeof p === 'boolean' ? (p ? 1 : 0) : p));

/** Statements on one connection, prepared once each. Synchronous underneath, promises in form. */
function connectionSql(db: Db): Sql {
  const cache = new Map<string, Database.Statement>();
  const prepared = (text: string) => {
    let statement = cache.get(text);
    if (!statement) {
      statement = db.prepare(text);
      cache.set(text, statement);
    }
    return statement;
  };
  return {
    all: async <T>(text: string, params: readonly unknown[] = []) => prepared(text).all(...bindable(params)) as T[],
    get: async <T>(text: string, params: readonly unknown[] = []) => prepared(text).get(...bindable(params)) as T | undefined,
    run: async (text, params = []) => prepared(text).run(...bindable(params)).changes,
  };
}

/** An operation's value as the writer holds it: its result, and its events once the batch appended them. */
class Done {
  events: AuditEventRecord[] = [];
  constructor(
    readonly result: unknown,
    readonly entries: readonly AuditEntry[],
  ) {}
}

/**
 * The SQLite engine: reads on a connection of their own, so they never wait on the write lock;
 * every change through the group-commit writer on the write connection, inside its write
 * transaction, which also serialises other broker processes on the same file. Names of locks
 * mean nothing here: the write lock covers the whole database.
 */
export function createSqliteEngine(db: Db, clock: Clock, reader: Db = db, datasync?: (fd: number) => Promise<void>): Engine {
  const write = connectionSql(db);

  const chainHead = db.prepare<[], { seq: number; hash: string }>('SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1');
  /** One INSERT per number of rows, prepared once each. */
  const insertEvents = new Map<number, Database.Statement>();
  const insertOf = (rows: number) => {
    let statement = insertEvents.get(rows);
    if (!statement) {
      statement = db.prepare(
        `INSERT INTO audit_events (seq, at, type, actor_iss, actor_sub, request_id, data, prev_hash, hash)
         VALUES ${Array.from({ length: rows }, () => '(?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`,
      );
      insertEvents.set(rows, statement);
    }
    return statement;
  };

  /** Chains events in the open write transaction: seq and hashes from the head it reads. */
  function appendEvents(entries: readonly AuditEntry[]): AuditEventRecord[] {
    if (entries.length === 0) return [];
    let head = chainHead.get();
    const at = toIso(clock());
    const rows = entries.map((entry) => {
      const event = {
        at,
        type: entry.type,
        actor: entry.actor ? { iss: entry.actor.iss, sub: entry.actor.sub } : null,
        requestId: entry.requestId ?? null,
        data: entry.data ?? {},
      };
      // The data's canonical JSON once: the hash covers it, and the row stores it.
      const data = canonicalJson(event.data);
      const { before, after } = canonicalParts(event, data);
      const seq = (head?.seq ?? 0) + 1;
      const prevHash = head?.hash ?? GENESIS_HASH;
      const record = { ...event, seq, prevHash, hash: chainHash(prevHash, `${before}${seq}${after}`) };
      head = record;
      return { record, data };
    });
    // A statement per event costs more than its row; SQLite takes at most 32,766 parameters.
    for (let i = 0; i < rows.length; i += EVENTS_PER_STATEMENT) {
      const chunk = rows.slice(i, i + EVENTS_PER_STATEMENT);
      insertOf(chunk.length).run(
        ...chunk.flatMap(({ record: r, data }) => [r.seq, r.at, r.type, r.actor?.iss ?? null, r.actor?.sub ?? null, r.requestId, data, r.prevHash, r.hash]),
      );
    }
    return rows.map((row) => row.record);
  }

  const checkpointer = startCheckpointer(db);
  // The batch's events go to the chain last, in one statement, in the order of its operations.
  const writer = createWriter(
    db,
    clock,
    (values) => {
      const done = values.filter((value): value is Done => value instanceof Done);
      const records = appendEvents(done.flatMap((d) => d.entries));
      let next = 0;
      for (const d of done) {
        d.events = records.slice(next, next + d.entries.length);
        next += d.entries.length;
      }
    },
    walSync(db, datasync),
  );

  return {
    name: 'sqlite',
    dialect,
    read: connectionSql(reader),
    lockByName: false,

    async operate(_locks, work) {
      const done = await writer.run<Done>(async () => {
        const entries: AuditEntry[] = [];
        const result = await work(write, (emitted) => void entries.push(...emitted));
        return new Done(result, entries);
      });
      return { result: done.result as never, events: done.events };
    },

    maintain: (_lock, work) => writer.run(() => work(write, { append: async (entries) => appendEvents(entries), claim: async (sets) => sets.map(() => true) })),

    async probe() {
      const failed = writer.lastFailure();
      if (failed !== undefined) throw new Unavailable('The last commit failed.', { internal: { failed_at: toIso(failed) } });
      // A write through the writer, rolled back: proves the file takes the write lock and is not
      // read-only, without a durable write per probe; free space stands for the rest.
      await writer.run(() => write.run('UPDATE readiness_probe SET at = at + 1 WHERE id = 1'), { rollback: true });
      if (db.name !== ':memory:') {
        const fs = statfsSync(dirname(db.name));
        if (fs.bavail * fs.bsize < MIN_FREE_BYTES) throw new Unavailable('The database disk is full.');
      }
    },

    async close() {
      if (!db.open) return;
      await writer.close();
      await checkpointer.close();
      if (reader !== db) reader.close();
      if (!db.readonly) optimize(db);
      db.close();
    },
  };
}

/**
 * SQLite's own advice before closing: refresh the planner's statistics. It needs the write lock,
 * which another process (a second worker, a replica) may hold: then it is skipped, never waited
 * for. It only ever helps the next start, so no failure of it may fail a shutdown.
 */
function optimize(db: Db): void {
  try {
    db.pragma('busy_timeout = 0');
    db.pragma('optimize');
  } catch {
    // Busy, or the file went read-only: the statistics refresh at the next open instead.
  }
}
