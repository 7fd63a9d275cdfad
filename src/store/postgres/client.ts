import pg from 'pg';
import { BrokerError, Unavailable } from '../../shared/errors.js';

/** BIGINT columns hold times in ms and counts: well inside a double, read as numbers. */
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === pg.types.builtins.INT8 ? Number : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

export type Query = <T = Record<string, unknown>>(text: string, params?: unknown[]) => Promise<T[]>;

export interface Pool {
  /** A statement on any pooled connection, outside a transaction. */
  query: Query;
  /**
   * `work` in one READ COMMITTED transaction on one connection: committed when it resolves
   * (rolled back instead with `rollback`, for probes), rolled back when it throws.
   */
  transaction<T>(work: (query: Query) => Promise<T>, options?: { rollback?: boolean }): Promise<T>;
  end(): Promise<void>;
  readonly raw: pg.Pool;
}

/**
 * The pool, with every failure of PostgreSQL itself (lost connection, failover, timeout, a
 * server error) turned into `Unavailable`: the caller gets a 503 and nothing was granted.
 * Errors the broker's own decisions throw (`BrokerError`) pass through as they are.
 */
export function createPool(url: string): Pool {
  const raw = new pg.Pool({
    connectionString: url,
    max: 10,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    // A request never waits long on a lock or a statement: it fails (503) and the caller retries.
    options: '-c lock_timeout=5000 -c statement_timeout=15000 -c idle_in_transaction_session_timeout=30000',
    types,
    application_name: 'jit-broker',
  });
  // A connection that breaks while idle in the pool is dropped by pg; without a listener the
  // 'error' event would crash the process.
  raw.on('error', () => {});

  const failure = (error: unknown) =>
    error instanceof BrokerError
      ? error
      : new Unavailable('The broker could not reach its database; nothing was granted. Try again shortly.', {
          cause: error,
          internal: { postgres: (error as { code?: string }).code, message: (error as Error).message },
        });

  return {
    raw,
    async query<T>(text: string, params: unknown[] = []) {
      try {
        return (await raw.query(text, params)).rows as T[];
      } catch (error) {
        throw failure(error);
      }
    },
    async transaction<T>(work: (query: Query) => Promise<T>, options: { rollback?: boolean } = {}): Promise<T> {
      let client: pg.PoolClient;
      try {
        client = await raw.connect();
      } catch (error) {
        throw failure(error);
      }
      let broken = false;
      const query: Query = async <R>(text: string, params: unknown[] = []) => {
        try {
          return (await client.query(text, params)).rows as R[];
        } catch (error) {
          broken = true;
          throw failure(error);
        }
      };
      try {
        await query('BEGIN');
        const result = await work(query);
        await query(options.rollback ? 'ROLLBACK' : 'COMMIT');
        return result;
      } catch (error) {
        // A decision that threw is the caller's answer, a failed statement already `Unavailable`,
        // anything else a defect that the error handler answers with a bare 500.
        try {
          await client.query('ROLLBACK');
        } catch {
          broken = true;
        }
        throw error;
      } finally {
        // A connection that failed mid-transaction is not trusted with the next one.
        client.release(broken ? true : undefined);
      }
    },
    end: async () => {
      if (!raw.ended) await raw.end();
    },
  };
}
