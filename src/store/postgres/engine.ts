import { canonicalJson } from '../../shared/canonical-json.js';
import { canonicalParts } from '../../shared/chain-hash.js';
import { toIso, type Clock } from '../../shared/clock.js';
import type { Dialect, Engine, Sql } from '../engine.js';
import type { AuditEntry, AuditEventRecord } from '../records.js';
import { createBatcher, LOCK_SQL } from './batch.js';
import type { Connection, Pool } from './client.js';
import { literal, numbered } from './literal.js';
import { retryConflicts, type OnConflict } from './retry.js';

const dialect: Dialect = {
  true: 'TRUE',
  false: 'FALSE',
  unindexed: (expression) => expression,
  skipLocked: (table) => `FOR UPDATE${table ? ` OF ${table}` : ''} SKIP LOCKED`,
};

/** Statements through the pool or a transaction's connection. */
function connectionSql(connection: Connection): Sql {
  return {
    all: <T>(text: string, params: readonly unknown[] = []) => connection.query<T>(numbered(text), params),
    get: async <T>(text: string, params: readonly unknown[] = []) => (await connection.query<T>(numbered(text), params))[0],
    run: (text, params = []) => connection.execute(numbered(text), params),
  };
}

/**
 * The PostgreSQL engine, for several broker replicas on one database. Each operation is one
 * READ COMMITTED transaction (group-committed with others, batch.ts) that first takes the
 * transaction advisory locks it names, every lock of a batch at once and in one order: the
 * caller's holders for an admission, the request and its holders for a change. Every row a
 * transaction writes is covered by a lock it holds, so no two transactions wait on each other's
 * rows in a cycle; sweeps only ever try locks. Events go through `append_audit_events`, which
 * takes the chain's lock last and holds it to commit: one chain, no gaps, whatever the number of
 * replicas. Should PostgreSQL still report a deadlock or a serialization failure, the
 * transaction runs again (retry.ts), and `onConflict` hears of it.
 */
export function createPostgresEngine(pool: Pool, clock: Clock, onConflict: OnConflict = () => {}): Engine {
  /**
   * Events as `append_audit_events` takes them (jsonb), and their records once it answered: it
   * assigns seq and chains the hashes under the chain's lock, from the canonical JSON the broker
   * sends in two parts around the seq, which only the function knows.
   */
  function chainInput(entries: readonly AuditEntry[]) {
    const at = toIso(clock());
    const events = entries.map((entry) => ({
      at,
      type: entry.type,
      actor: entry.actor ? { iss: entry.actor.iss, sub: entry.actor.sub } : null,
      requestId: entry.requestId ?? null,
      data: entry.data ?? {},
    }));
    const json = JSON.stringify(
      events.map((event) => {
        // The data's canonical JSON once: the parts around the seq hold it, and the row stores it.
        const data = canonicalJson(event.data);
        return {
          ...canonicalParts(event, data),
          at: event.at,
          type: event.type,
          actor_iss: event.actor?.iss ?? null,
          actor_sub: event.actor?.sub ?? null,
          request_id: event.requestId,
          data,
        };
      }),
    );
    const records = (sealed: readonly Record<string, unknown>[]): AuditEventRecord[] =>
      events.map((event, i) => {
        const { seq, prev_hash: prevHash, hash } = sealed[i] as { seq: number; prev_hash: string; hash: string };
        return { ...event, seq, prevHash, hash };
      });
    return { json, records };
  }

  const APPEND = 'SELECT seq, prev_hash, hash FROM append_audit_events';

  /** Appends events in a maintenance transaction (the last thing it does: it takes the chain's lock). */
  async function appendEvents(tx: Connection, entries: readonly AuditEntry[]): Promise<AuditEventRecord[]> {
    if (entries.length === 0) return [];
    const { json, records } = chainInput(entries);
    return records(await tx.query(`${APPEND}($1::jsonb)`, [json]));
  }

  const batcher = createBatcher(
    pool,
    (entries) => {
      const { json, records } = chainInput(entries);
      return { statement: { text: `${APPEND}(?::jsonb)`, literals: [literal(json)] }, records };
    },
    onConflict,
  );

  return {
    name: 'postgres',
    dialect,
    read: connectionSql(pool),
    lockByName: true,
    operate: (locks, work) => batcher.run(locks, work),
    maintain: (lock, work) =>
      retryConflicts(
        () =>
          pool.transaction(async (tx) => {
            if (lock !== undefined) await tx.query(LOCK_SQL, [[lock]]);
            return work(connectionSql(tx), {
              append: (entries) => appendEvents(tx, entries),
              async claim(sets) {
                if (sets.length === 0) return [];
                // Every lock is tried (bool_and does not stop early); those taken for a set that fails stay held to commit, harmlessly.
                const taken = await tx.query<{ i: number; taken: boolean }>(
                  `SELECT i, bool_and(pg_try_advisory_xact_lock(hashtextextended(k, 0))) AS taken
                   FROM unnest($1::text[], $2::int[]) AS lock (k, i) GROUP BY i`,
                  [sets.flat(), sets.flatMap((keys, i) => keys.map(() => i))],
                );
                return sets.map((_keys, i) => taken.find((row) => row.i === i)?.taken ?? true);
              },
            });
          }),
        onConflict,
      ),
    // A write rolled back: proves a primary that takes writes (not a read-only standby after a
    // failover) without a durable write per probe.
    probe: () => pool.transaction((tx) => tx.execute('UPDATE readiness_probe SET at = at + 1 WHERE id = 1'), { rollback: true }).then(() => {}),
    async close() {
      await batcher.idle();
      await pool.end();
    },
  };
}
