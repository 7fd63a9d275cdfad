import pg from 'pg';
import { BrokerError, Unavailable } from '../../shared/errors.js';

/** BIGINT columns hold times in ms and counts: well inside a double, read as numbers. */
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === pg.types.builtins.INT8 ? Number : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

export type Query = <T = Record<string, unknown>>(text: string, params?: readonly unknown[]) => Promise<T[]>;

/** Statements: `query` answers rows, `execute` the number of rows a write changed. */
export interface Connection {
  query: Query;
  execute(text: string, params?: readonly unknown[]): Promise<number>;
}

/**
 * One connection's statements as the batcher sends them: several in one round trip, by the
 * simple query protocol (values already written in, see literal.ts), with their transaction's
 * BEGIN and COMMIT among them.
 */
export interface Session {
  /**
   * Runs `statements` in order in one round trip and resolves to one result each; the first that
   * fails stops the rest (and, in a transaction, aborts it) and rejects with `Unavailable`.
   */
  send(statements: readonly string[]): Promise<pg.QueryResult[]>;
  /** Statement texts this connection has prepared (PREPARE, which outlives transactions), with their names. */
  readonly prepared: Map<string, string>;
}

export interface Pool extends Connection {
  /**
   * `work` in one READ COMMITTED transaction on one connection: committed when it resolves
   * (rolled back instead with `rollback`, for probes), rolled back when it throws.
   */
  transaction<T>(work: (tx: Connection) => Promise<T>, options?: { rollback?: boolean }): Promise<T>;
  /**
   * `work` on one connection of its own, which sends its own BEGIN and COMMIT and must end its
   * transaction when it resolves. When it throws, its transaction is rolled back here, and the
   * connection is dropped rather than reused if a statement had failed on it.
   */
  session<T>(work: (session: Session) => Promise<T>): Promise<T>;
  end(): Promise<void>;
  readonly raw: pg.Pool;
}

/** The SQLSTATE of a failure of PostgreSQL's (`40P01`: deadlock detected), however it was wrapped. */
export function sqlState(error: unknown): string | undefined {
  const internal = error instanceof BrokerError ? error.internal.postgres : (error as { code?: unknown } | undefined)?.code;
  return typeof internal === 'string' ? internal : undefined;
}

/**
 * A failure of PostgreSQL itself (lost connection, failover, timeout, a server error) as the
 * caller sees it: a 503, nothing granted. The broker's own decisions (`BrokerError`) pass as they are.
 */
export const failure = (error: unknown) =>
  error instanceof BrokerError
    ? error
    : new Unavailable('The broker could not reach its database; nothing was granted. Try again shortly.', {
        cause: error,
        internal: { postgres: (error as { code?: string }).code, message: (error as Error).message },
      });

/**
 * How long the broker waits for any answer to a statement, a little past the server's own
 * statement_timeout: a server that answers nothing at all (a network partition, a hung host)
 * fails the request with a 503 instead of holding it, and every batch queued behind it, for the
 * minutes TCP takes to give up. The connection is then dropped.
 */
const ANSWER_TIMEOUT_MS = 20_000;
/**
 * After PostgreSQL has not answered in time (a statement past ANSWER_TIMEOUT_MS, a connection
 * not made in connectionTimeoutMillis), new work is refused at once (503, Retry-After) for this
 * long, rather than each request holding its caller, a connection and its memory while it waits
 * out its own timeout against a server just found silent. A server that answers, even with an
 * error, trips nothing: one broken session is no outage.
 */
const SILENCE_HOLD_MS = 5_000;
/** pg's and pg-pool's own words for a server that did not answer in time. */
const NO_ANSWER = /^(Query read timeout|timeout exceeded when trying to connect|Connection terminated due to connection timeout)$/;
/** An error the server answered with (it carries a SQLSTATE), as against one of the connection. */
const fromServer = (error: unknown): boolean => /^[0-9A-Z]{5}$/.test(String((error as { code?: unknown }).code));
/** A statement with that deadline (pg reads `query_timeout` per query; its types leave it out). */
const timed = (text: string, values?: readonly unknown[]): pg.QueryConfig => ({ text, values: values as unknown[], query_timeout: ANSWER_TIMEOUT_MS }) as pg.QueryConfig;

/**
 * The pool, with every failure of PostgreSQL itself (lost connection, failover, timeout, a
 * server error) turned into `Unavailable`: the caller gets a 503 and nothing was granted.
 * Errors the broker's own decisions throw (`BrokerError`) pass through as they are.
 */
/** The deadlines a request runs under: it never waits long on a lock or a statement, it fails (503) and the caller retries. */
const SESSION_OPTIONS = '-c lock_timeout=5000 -c statement_timeout=15000 -c idle_in_transaction_session_timeout=30000';

/**
 * The URL without its `options`, and the session options: the URL's, then the broker's. pg takes
 * a URL's `options` in place of the pool's, which silently dropped every deadline above (a URL
 * setting search_path ran requests with no lock timeout at all); later settings win, so the
 * broker's deadlines hold whatever the URL says, and the rest of what it says is kept.
 */
function sessionOptions(url: string): { url: string; options: string } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { url, options: SESSION_OPTIONS };
  }
  const own = parsed.searchParams.get('options');
  if (own === null) return { url, options: SESSION_OPTIONS };
  parsed.searchParams.delete('options');
  return { url: parsed.toString(), options: `${own} ${SESSION_OPTIONS}` };
}

export function createPool(url: string): Pool {
  /** Each connection's prepared statements: they last as long as it. */
  const prepared = new WeakMap<pg.PoolClient, Map<string, string>>();
  const session = sessionOptions(url);
  const raw = new pg.Pool({
    connectionString: session.url,
    max: 10,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    // Idle connections to a peer that vanished are found by TCP keepalive, not by the next request.
    keepAlive: true,
    options: session.options,
    types,
    application_name: 'jit-broker',
  });
  // A connection that breaks while idle in the pool is dropped by pg; without a listener the
  // 'error' event would crash the process.
  raw.on('error', () => {});
  // One that breaks while checked out (between a batch's round trips, when the server ends its
  // session) has no pool listener then: its 'error' is heard here, for the life of the client, and
  // the client is dropped when it is given back. Its pending or next statement fails (a 503).
  const broken = new WeakSet<pg.PoolClient>();
  raw.on('connect', (client) => client.on('error', () => broken.add(client)));
  const giveBack = (client: pg.PoolClient, failed: boolean) => client.release(failed || broken.has(client) ? true : undefined);

  let silentUntil = 0;
  /** Fails `error` as the caller sees it, noting first whether the server failed to answer. */
  const failed = (error: unknown) => {
    if (!fromServer(error) && NO_ANSWER.test((error as Error | undefined)?.message ?? '')) silentUntil = Date.now() + SILENCE_HOLD_MS;
    return failure(error);
  };
  /** Refuses at once while the server was found silent a moment ago. */
  const heard = () => {
    if (Date.now() < silentUntil) throw failure(new Error('PostgreSQL did not answer in time a moment ago; not asked again yet'));
  };
  const connect = async () => {
    heard();
    try {
      return await raw.connect();
    } catch (error) {
      throw failed(error);
    }
  };

  const run = async (client: pg.Pool | pg.PoolClient, text: string, params: readonly unknown[]) => {
    try {
      return await client.query(timed(text, params));
    } catch (error) {
      throw failed(error);
    }
  };

  return {
    raw,
    query: async <T>(text: string, params: readonly unknown[] = []) => (heard(), (await run(raw, text, params)).rows as T[]),
    execute: async (text, params = []) => (heard(), (await run(raw, text, params)).rowCount ?? 0),
    async transaction<T>(work: (tx: Connection) => Promise<T>, options: { rollback?: boolean } = {}): Promise<T> {
      const client = await connect();
      let failedStatement = false;
      // Operations may issue statements side by side (Promise.all); they run one at a time, in
      // the order issued, as pg would queue them (its own queue is deprecated in pg 8, gone in 9).
      let previous: Promise<unknown> = Promise.resolve();
      const statement = (text: string, params: readonly unknown[] = []) => {
        const result = previous.then(() => run(client, text, params));
        previous = result.catch(() => {});
        return result.catch((error: unknown) => {
          failedStatement = true;
          throw error;
        });
      };
      const tx: Connection = {
        query: async <R>(text: string, params?: readonly unknown[]) => (await statement(text, params)).rows as R[],
        execute: async (text, params) => (await statement(text, params)).rowCount ?? 0,
      };
      try {
        await tx.query('BEGIN');
        const result = await work(tx);
        await tx.query(options.rollback ? 'ROLLBACK' : 'COMMIT');
        return result;
      } catch (error) {
        // A decision that threw is the caller's answer, a failed statement already `Unavailable`,
        // anything else a defect that the error handler answers with a bare 500.
        // A connection whose statement failed is dropped, which ends its transaction: no ROLLBACK
        // is sent to a server that may not answer.
        if (!failedStatement) {
          try {
            await previous;
            await client.query(timed('ROLLBACK'));
          } catch {
            failedStatement = true;
          }
        }
        throw error;
      } finally {
        // A connection that failed mid-transaction is not trusted with the next one.
        giveBack(client, failedStatement);
      }
    },
    async session<T>(work: (session: Session) => Promise<T>): Promise<T> {
      const client = await connect();
      let sessionFailed = false;
      let names = prepared.get(client);
      if (names === undefined) {
        names = new Map();
        prepared.set(client, names);
      }
      // Once the server has not answered (a timeout, a lost connection), nothing more is sent on
      // this session: a savepoint's rollback would wait its own timeout on a connection already lost.
      let lost: unknown;
      const session: Session = {
        prepared: names,
        async send(statements) {
          if (lost) throw failure(lost);
          try {
            const results = (await client.query(timed(statements.join(';\n')))) as pg.QueryResult | pg.QueryResult[];
            return Array.isArray(results) ? results : [results];
          } catch (error) {
            sessionFailed = true;
            if (!fromServer(error)) lost = error;
            throw failed(error);
          }
        },
      };
      try {
        const result = await work(session);
        giveBack(client, false);
        return result;
      } catch (error) {
        // What the work left open (or aborted) ends here; a connection that failed a statement
        // and was not brought back by its work is not trusted with the next one.
        if (!sessionFailed) {
          try {
            await client.query(timed('ROLLBACK'));
          } catch {
            sessionFailed = true;
          }
        }
        giveBack(client, sessionFailed);
        throw error;
      }
    },
    end: async () => {
      if (!raw.ended) await raw.end();
    },
  };
}
