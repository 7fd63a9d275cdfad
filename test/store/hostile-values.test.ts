import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyStoredChain } from '../../src/audit/index.js';
import { canonicalJson } from '../../src/shared/canonical-json.js';
import type { ActorRecord, AuditEntry, AuditEventType, Holder, RequestRecord, Store } from '../../src/store/index.js';
import { openStore } from '../../src/store/index.js';
import { lockStatement } from '../../src/store/postgres/batch.js';
import { createPool } from '../../src/store/postgres/client.js';
import { createPostgresEngine } from '../../src/store/postgres/engine.js';
import { fill, inline, literal } from '../../src/store/postgres/literal.js';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { createTestDatabase, ENGINE, type TestDatabase } from '../helpers/engine.js';
import { tempDir } from '../helpers/temp.js';

/**
 * Every value a caller controls reaches PostgreSQL written into the statement's text as a
 * literal (postgres/literal.ts): one quoting mistake is SQL run in the broker's own database,
 * beside the audit chain and the grants. Thousands of generated values, built from what ends a
 * quote, a dollar tag, an escape or a comment, each with SQL after it, go through the literal
 * writer and the engine's batches (PostgreSQL), then through every field of the store's records
 * and through the API (both engines, the same values); each must be read back exactly as given,
 * and nothing else in the database may change. Seeded: every run draws the same values.
 */

const SEED = 0x5eed_1e7;

/** mulberry32: small, fast, and the same sequence on every run. */
function randomness(seed: number) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(list: readonly T[]): T => list[int(list.length)] as T;
  return { next, int, pick };
}

/** What ends a literal, or a comment, of one kind or another. */
const CLOSERS = [
  "'", "''", "\\'", "\\\\'", "'\\", "$jit$", "$jit$'", "'$jit$", "\\$jit$", "$jit$$jit$", "$$", "'$$", "$jit", "$ji", "$",
  '"', "')", "'))", "'::text)", '$jit$)', '$jit$])', "'])", "E'", "e'\\'", "U&'", "X'", '*/', '\n', '\r\n', "'\n", '\\',
];
/** What an injection would then run: each changes something the test looks at. */
const PAYLOADS = [
  '; DROP TABLE jit_canary; --',
  '; DELETE FROM jit_canary; --',
  '; UPDATE jit_canary SET n = 666; --',
  '; INSERT INTO jit_canary (n) VALUES (666); --',
  "; UPDATE requests SET status = 'issued', revoke_reason = NULL; --",
  '; DELETE FROM holder_load; --',
  '; DROP TRIGGER audit_events_no_update ON audit_events; --',
  "; UPDATE audit_events SET data = '{}' WHERE seq = 1; --",
  '; TRUNCATE audit_events; --',
  '; COMMIT; DELETE FROM jit_canary; BEGIN; --',
  '; ROLLBACK; DELETE FROM jit_canary; --',
  "'); DELETE FROM jit_canary; --",
  '*/ DELETE FROM jit_canary; /*',
  ' OR 1=1 --',
  '; SELECT pg_sleep(30); --',
  '; DELETE FROM jit_canary /*',
];
/** Pieces that mean something to PostgreSQL's lexer or to a placeholder writer. */
const FRAGMENTS = [
  ...CLOSERS,
  ...PAYLOADS,
  '$a$', '$tag$', '$1', '$2', '$0', '$&', "$'", '$`', '$JIT$', '$jit_$', '$jitü$', 'jit$', '$ji$', '?', '??', '?|', '?&', '? ?',
  ';', '--', '/*', '*/', '/**/', 'E', "E'\\x27'", "U&'\\0027'", "U&'!0027' UESCAPE '!'", "B'", "N'", '`', '""',
  '\\x27', '\\047', '\\u0027', '\\U00000027', '\\n', '\\0', '\\\\', '%', '_', '{', '}', ',', '[', ']', '(', ')', '::', '::text',
  'NULL', 'null', 'TRUE', '-1', '--1', '- -', ':1', '@1', '\n', '\r', '\t', '\u2028', '\ufeff', '\u00a0', '\u200b', 'ü', 'ß',
  '𝄞', '😀', '\u{10ffff}', '\uffff', '\ufffe', '\ufffd', '\u0001', '\u001b[31m', '\u007f', '\u0085', '\u00ff', '\u0100', '\u202e',
  'é', 'e\u0301', 'ﬁ', 'İ', '\\u0000', '\\x00', '%00', 'jit_1', 'EXECUTE jit_1(', 'PREPARE', 'DEALLOCATE ALL', 'ARRAY[', 'SAVEPOINT batch',
  '__proto__', 'constructor', 'identity:', 'request:', 'dpop:', 'duty:',
];

/** A random character: mostly ASCII, any other code point but NUL and the surrogates (refused where the broker reads text). */
function character(r: ReturnType<typeof randomness>): string {
  const kind = r.int(10);
  if (kind < 5) return String.fromCodePoint(0x20 + r.int(0x5f));
  if (kind === 5) return String.fromCodePoint(1 + r.int(0x9f));
  if (kind === 6) return String.fromCodePoint(0xa0 + r.int(0xd800 - 0xa0));
  if (kind === 7) return String.fromCodePoint(0xe000 + r.int(0x10000 - 0xe000));
  if (kind === 8) return String.fromCodePoint(0x10000 + r.int(0x110000 - 0x10000));
  return r.pick(["'", '\\', '$', '?', ';', '-', '/', '*', '"', 'E', 'j', 'i', 't']);
}

/** A hostile text of at most about `max` characters: one built to close a quote and run SQL, or a mix of pieces. */
function hostile(r: ReturnType<typeof randomness>, max = 48): string {
  let text: string;
  if (r.int(3) === 0) {
    text = `${r.int(2) ? r.pick(FRAGMENTS) : ''}${r.pick(CLOSERS)}${r.pick(PAYLOADS)}${r.int(2) ? r.pick(CLOSERS) : ''}`;
  } else {
    text = '';
    for (let n = 1 + r.int(8); n > 0; n -= 1) text += r.int(3) ? r.pick(FRAGMENTS) : character(r);
  }
  // Some end where a closing tag would complete what they end in.
  if (r.int(8) === 0) text += r.pick(['$jit', '$ji', '$j', '$', '\\', "'", '$jit$']);
  return [...text].slice(0, max).join('');
}

/** Texts of every kind, deterministic. */
function hostileTexts(seed: number, n: number, max?: number): string[] {
  const r = randomness(seed);
  return Array.from({ length: n }, () => hostile(r, max));
}

/** Numbers as the store binds them, the awkward ones first. */
function hostileNumbers(seed: number, n: number): number[] {
  const r = randomness(seed);
  const awkward = [0, -0, 1, -1, 0.1 + 0.2, -1e-7, 1e21, -1e21, 5e-324, -5e-324, Number.MAX_VALUE, -Number.MAX_VALUE, Number.MIN_VALUE,
    Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, 2 ** 63, -(2 ** 63), 2 ** 31 - 1, -(2 ** 31), 1e300, 1.5e-300];
  return [
    ...awkward,
    ...Array.from({ length: n - awkward.length }, () => {
      const kind = r.int(3);
      const sign = r.int(2) ? -1 : 1;
      if (kind === 0) return sign * r.int(Number.MAX_SAFE_INTEGER);
      if (kind === 1) return sign * r.next() * 10 ** (r.int(600) - 300);
      return sign * r.int(100);
    }),
  ];
}

const chunks = <T>(list: readonly T[], size: number): T[][] =>
  Array.from({ length: Math.ceil(list.length / size) }, (_, i) => list.slice(i * size, (i + 1) * size));

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase(tempDir('jit-hostile-'));
  // What an injection's payload changes first: one row, which nothing of the broker's touches.
  await db.sql('CREATE TABLE jit_canary (n INTEGER NOT NULL)');
  await db.sql('INSERT INTO jit_canary (n) VALUES (1)');
});
afterAll(async () => {
  await db?.drop();
});

const canaryIntact = async () => expect(await db.sql('SELECT n FROM jit_canary')).toEqual([{ n: 1 }]);

describe.runIf(ENGINE === 'postgres')('hostile values written in as literals', () => {
  let clients: { name: string; client: pg.Client }[];
  beforeAll(async () => {
    const on = new pg.Client({ connectionString: db.url });
    // A server or role may turn standard_conforming_strings off: backslashes in '' then escape.
    const off = new pg.Client({ connectionString: db.url });
    await Promise.all([on.connect(), off.connect()]);
    await off.query('SET standard_conforming_strings = off; SET escape_string_warning = off');
    clients = [
      { name: 'standard_conforming_strings on', client: on },
      { name: 'standard_conforming_strings off', client: off },
    ];
  });
  afterAll(async () => {
    await Promise.all((clients ?? []).map(({ client }) => client.end()));
  });

  it('read back exactly as given, side by side and statement after statement, whatever standard_conforming_strings says', async () => {
    const texts = hostileTexts(SEED, 4_000, 120);
    for (const { name, client } of clients) {
      for (const [i, chunk] of chunks(texts, 200).entries()) {
        // Two statements in one message, as a batch sends them, each value a placeholder of its own.
        const select = `SELECT ${chunk.map(() => '?').join(', ')}`;
        const results = (await client.query({ text: `${inline(select, chunk)};\n${inline(select, chunk)};\nSELECT n FROM jit_canary`, rowMode: 'array' })) as unknown as pg.QueryResult[];
        expect(results, `${name}, chunk ${i}`).toHaveLength(3);
        expect(results[0]?.rows, `${name}, chunk ${i}`).toEqual([chunk]);
        expect(results[1]?.rows, `${name}, chunk ${i}`).toEqual([chunk]);
        expect(results[2]?.rows).toEqual([[1]]);
        // Inside an array constructor and a cast, as the batch's lock statement has them.
        const array = await client.query<{ v: string[] }>(`SELECT ARRAY[${chunk.map(literal).join(', ')}]::text[] AS v`);
        expect(array.rows[0]?.v, `${name}, chunk ${i}`).toEqual(chunk);
      }
    }
    await canaryIntact();
  });

  it('hold each value one by one, each literal reading back as the one value it was written for', async () => {
    // One statement per value: a literal that ended early would make the rest of the text SQL.
    const texts = hostileTexts(SEED + 1, 1_500, 200);
    for (const { name, client } of clients) {
      const results = (await client.query({ text: texts.map((text) => `SELECT ${literal(text)}::text AS v`).join(';\n'), rowMode: 'array' })) as unknown as pg.QueryResult[];
      expect(results.map((result) => result.rows[0]?.[0]), name).toEqual(texts);
    }
    await canaryIntact();
  });

  it('keep numbers, however awkward, as the numbers they are', async () => {
    const numbers = hostileNumbers(SEED + 2, 1_000);
    const { client } = clients[0] as { client: pg.Client };
    for (const chunk of chunks(numbers, 250)) {
      // Each after a minus: `0-?` must not become the comment `0--1`.
      const select = `SELECT ${chunk.map(() => '?::float8, 0-?::float8').join(', ')}`;
      const [row] = (await client.query({ text: inline(select, chunk.flatMap((n) => [n, n])), rowMode: 'array' })).rows as number[][];
      expect(row).toEqual(chunk.flatMap((n) => [n === 0 ? 0 : n, n === 0 ? 0 : -n]));
    }
    const big = [0n, -1n, 2n ** 63n - 1n, -(2n ** 63n), 10n ** 40n, -(10n ** 40n)];
    const [row] = (await client.query({ text: inline(`SELECT ${big.map(() => '0-?::numeric').join(', ')}`, big), rowMode: 'array' })).rows as string[][];
    expect(row).toEqual(big.map((n) => String(-n)));
  });

  it('name lock keys as text, each its own lock, whatever they hold', async () => {
    const { client } = clients[1] as { client: pg.Client };
    for (const keys of chunks(hostileTexts(SEED + 3, 600, 80), 150)) {
      await client.query('BEGIN');
      try {
        const { text, literals } = lockStatement(keys);
        await client.query(fill(text, literals));
        const held = await client.query<{ n: string }>("SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()");
        const distinct = await client.query<{ n: string }>('SELECT count(DISTINCT hashtextextended(k, 0)) AS n FROM unnest($1::text[]) k', [keys]);
        expect(held.rows[0]?.n).toBe(distinct.rows[0]?.n);
      } finally {
        await client.query('ROLLBACK');
      }
    }
    await canaryIntact();
  });

  it('pass through the engine\'s batches exactly, prepared and, past its prepared statements, written out', async () => {
    const engine = createPostgresEngine(createPool(db.url), Date.now);
    try {
      const texts = hostileTexts(SEED + 4, 2_100, 120);
      // Over 500 statement texts: a connection prepares 500 at most, then writes the rest out in full.
      const TEXTS = 700;
      const answers = await Promise.all(
        chunks(texts, 3).map(async ([a, b, key], k) => {
          const { result } = await engine.operate([key as string], (sql) =>
            sql.get<{ a: string; b: string; k: number }>(`SELECT ?::text AS a, ? AS b, ${k % TEXTS} AS k`, [a, b]),
          );
          return result;
        }),
      );
      expect(answers).toEqual(chunks(texts, 3).map(([a, b], k) => ({ a, b, k: k % TEXTS })));
      const { result: prepared } = await engine.operate([], (sql) => sql.get<{ n: string }>('SELECT count(*) AS n FROM pg_prepared_statements'));
      expect(Number(prepared?.n)).toBe(500);
    } finally {
      await engine.close();
    }
    await canaryIntact();
  });
});

/**
 * PostgreSQL's text holds no NUL, and UTF-8 no lone surrogate (the API refuses both, CONTRACT
 * sections 1 and 4). Should one reach the engine all the same, the operation it came with fails,
 * as a statement of its own that failed would: never the others its batch carries, which are
 * other callers' requests.
 */
describe.runIf(ENGINE === 'postgres')('text PostgreSQL cannot hold', () => {
  type Settled = PromiseSettledResult<unknown>;
  const outcome = (settled: Settled) => (settled.status === 'fulfilled' ? 'done' : ((settled.reason as { internal?: { postgres?: string } }).internal?.postgres ?? String(settled.reason)));

  /** Runs `ops` in one batch (queued behind a first, while it commits); their outcomes, and which of them wrote. */
  async function together(ops: ((engine: ReturnType<typeof createPostgresEngine>) => Promise<unknown>)[]) {
    await db.sql('CREATE TABLE IF NOT EXISTS jit_written (k TEXT NOT NULL)');
    await db.sql('DELETE FROM jit_written');
    const engine = createPostgresEngine(createPool(db.url), Date.now);
    try {
      const settled = await Promise.allSettled([engine.operate([], async () => undefined), ...ops.map((op) => op(engine))]);
      const written = (await db.sql<{ k: string }>('SELECT k FROM jit_written ORDER BY k')).map((row) => row.k);
      return { outcomes: settled.slice(1).map(outcome), written };
    } finally {
      await engine.close();
    }
  }

  /** An operation that writes, then reads `value`, under the lock `lock`, and records `event`. */
  const writing = (k: string, { lock = k, value = k, event = { type: 'notify.failed' } as AuditEntry } = {}) => (engine: ReturnType<typeof createPostgresEngine>) =>
    engine.operate([lock], async (sql, emit) => {
      await sql.run('INSERT INTO jit_written (k) VALUES (?)', [k]);
      await sql.get('SELECT ?::text AS v', [value]);
      emit([{ ...event, data: { k } }]);
    });

  it('in a statement\'s value fails that operation alone, its writes undone', async () => {
    const { outcomes, written } = await together([writing('a'), writing('b', { value: 'b\0' }), writing('c')]);
    expect(outcomes).toEqual(['done', '22021', 'done']);
    expect(written).toEqual(['a', 'c']);
  });

  it('in a lock name fails that operation alone', async () => {
    const { outcomes, written } = await together([writing('a'), writing('b', { lock: 'request:b\0' }), writing('c')]);
    expect(outcomes).toEqual(['done', '22021', 'done']);
    expect(written).toEqual(['a', 'c']);
  });

  it('in an event\'s actor, type or request fails that operation alone, its writes and events undone', async () => {
    const head = (await db.sql<{ n: number }>('SELECT count(*)::int AS n FROM audit_events'))[0]?.n ?? 0;
    const { outcomes, written } = await together([
      writing('a'),
      writing('b', { event: { type: 'notify.failed', actor: { iss: 'https://ci.test', sub: 'b\0' } } }),
      writing('c', { event: { type: 'notify.failed', actor: { iss: 'https://ci.test\ud800', sub: 'c' } } }),
      writing('d', { event: { type: 'notify.failed\0' as AuditEventType } }),
      writing('e', { event: { type: 'notify.failed', requestId: '\udc00e' } }),
      writing('f'),
    ]);
    expect(outcomes).toEqual(['done', '22021', '22021', '22021', '22021', 'done']);
    expect(written).toEqual(['a', 'f']);
    const events = await db.sql<{ data: string }>('SELECT data FROM audit_events WHERE seq > ? ORDER BY seq', [head]);
    expect(events.map((event) => JSON.parse(event.data).k).sort()).toEqual(['a', 'f']);
  });
});

/** Every table's rows as text, and the schema (tables, indexes, triggers and whether they fire, functions, settings). */
async function snapshot(): Promise<{ schema: unknown[]; rows: Map<string, string[]> }> {
  const postgres = ENGINE === 'postgres';
  const tables = (
    await db.sql<{ name: string }>(
      postgres ? "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public'" : "SELECT name FROM sqlite_master WHERE type = 'table'",
    )
  ).map((table) => table.name);
  const schema = postgres
    ? await db.sql(
        `SELECT 'class' AS kind, c.relname AS name, c.relkind::text AS detail FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = 'public'
         UNION ALL SELECT 'trigger', tgname, tgenabled::text FROM pg_trigger WHERE NOT tgisinternal
         UNION ALL SELECT 'function', proname, md5(prosrc) FROM pg_proc p JOIN pg_namespace s ON s.oid = p.pronamespace WHERE s.nspname = 'public'
         UNION ALL SELECT 'setting', setrole::text, array_to_string(setconfig, ',') FROM pg_db_role_setting
           WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
         ORDER BY 1, 2, 3`,
      )
    : await db.sql('SELECT type, name, sql FROM sqlite_master ORDER BY name');
  const rows = new Map<string, string[]>();
  for (const table of tables) {
    const found = postgres
      ? (await db.sql<{ row: string }>(`SELECT row_to_json(t)::text AS row FROM "${table}" t`)).map((row) => row.row)
      : (await db.sql(`SELECT * FROM "${table}"`)).map((row) => JSON.stringify(row));
    rows.set(table, found.sort());
  }
  return { schema, rows };
}

/** The tables a store operation writes: anything else must not change at all. */
const WRITTEN = new Set([
  'requests', 'issuances', 'issued_scopes', 'approvals', 'break_glass_reviews', 'audit_events', 'request_actors', 'request_objects',
  'live_scopes', 'live_holders', 'holder_load', 'caller_rates', 'caller_minutes', 'dpop_proofs', 'duty_steps', 'duty_participants',
]);

/** A value as the store reads it back from JSON: -0 is 0, members in any order. */
const asJson = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;

/** On PostgreSQL, the server's defaults, then standard_conforming_strings off as a database or role may set it. */
const SETTINGS = ENGINE === 'postgres' ? ['standard_conforming_strings on', 'standard_conforming_strings off'] : ['SQLite'];

describe.each(SETTINGS)('hostile values in every field of the store\'s records (%s)', (setting) => {
  const NOW = 1_767_225_600_000;
  let store: Store;
  beforeAll(async () => {
    if (setting === 'standard_conforming_strings off') {
      await db.sql(`ALTER DATABASE ${new URL(db.url).pathname.slice(1)} SET standard_conforming_strings = off`);
      const client = new pg.Client({ connectionString: db.url });
      await client.connect();
      expect((await client.query('SHOW standard_conforming_strings')).rows).toEqual([{ standard_conforming_strings: 'off' }]);
      await client.end();
    }
    // A pool of its own, whose sessions start after the setting.
    store = await openStore(db.url, () => NOW);
  });
  afterAll(async () => {
    await store?.close();
  });

  it('are read back exactly as given, through requests, changes, listings and the chain, and nothing else changes', async () => {
    const r = randomness(SEED + 6 + SETTINGS.indexOf(setting));
    const v = (max?: number) => hostile(r, max);
    const numbers = hostileNumbers(SEED + 7, 64);
    /** Nested data of hostile names and values, numbers and literals among them. */
    const data = (depth = 0): Record<string, unknown> => {
      const entries: [string, unknown][] = [[v(16), v(200)], ['text', v()], ['number', r.pick(numbers)], ['list', [v(), r.pick(numbers), true, false, null]]];
      if (depth < 2) entries.push([v(8), data(depth + 1)]);
      return Object.fromEntries(entries);
    };
    const principal = (i: number) => ({ iss: v(), sub: `${i}:${v()}` });
    const holder = (i: number, person: string | null): Holder => ({
      identity: principal(i),
      person: person === null ? null : { key: person, same: [person, `${i}:same:${v()}`] },
    });

    // A request recorded before: none of its rows may change.
    // Numbered apart from the other setting's requests, on the same database.
    const tag = SETTINGS.indexOf(setting) * 1_000;
    const canary = await admitOne(-1 - tag, false);
    await canaryIntact();
    const before = await snapshot();
    const headBefore = (await store.events.head())?.seq ?? 0;

    /** One request with hostile values everywhere, admitted; what the store was given for it. */
    async function admitOne(i: number, reviewed: boolean) {
      const person = r.int(2) ? `${i}:${v()}` : null;
      const principalHolder = holder(i, person);
      const actors: ActorRecord[] = Array.from({ length: r.int(3) }, (_, k) => {
        const actorPerson = r.int(2) ? `${i}:actor-${k}:${v()}` : null;
        return {
          ...principal(i),
          idp: v(),
          person: actorPerson,
          initiator: r.int(2) ? v() : null,
          boundClaims: r.int(2) ? { [v(12)]: v(24), repository: v(24) } : null,
          claims: data(1),
        };
      });
      const id = `${i}:${v()}`;
      const scopes = [`${i}:0:${v()}`, `${i}:1:${v()}`];
      const request: RequestRecord = {
        id,
        requester: principalHolder.identity,
        requesterIdp: v(),
        initiator: r.int(2) ? v() : null,
        person,
        boundClaims: r.int(2) ? { repository: v(24), ref: v(24), [v(12)]: { [v(12)]: v(24) } } : null,
        taskId: v(256),
        scopes,
        audience: v(),
        ttlSeconds: r.pick([0, 1, -1, 2 ** 31 - 1, -(2 ** 31), 900]),
        justification: r.int(4) ? v(2_000) : null,
        breakGlass: reviewed,
        authorizationDetails: r.int(4)
          ? [
              { type: v(), identifier: v(), actions: [v(), v()], locations: [v()], datatypes: [], privileges: [v()] },
              { type: v(), actions: [v()] },
            ]
          : null,
        act: actors.length > 0 ? actors : null,
        delegationRule: actors.length > 0 ? v() : null,
        parentId: null,
        rootId: id,
        subjectClaims: { sub: principalHolder.identity.sub, repository: v(), ref: v(), actor: v(), ...data(1) },
        dpopJkt: r.int(2) ? v() : null,
        policyIds: [v(), v()],
        digest: v(),
        approvalsRequired: r.pick([0, 1, -1, 2 ** 31 - 1, -(2 ** 31)]),
        status: 'issued',
        createdAt: NOW + i,
        expiresAt: NOW + 3_600_000,
        decidedAt: r.int(2) ? NOW : null,
        issuedAt: NOW,
        endedAt: null,
        revokeReason: null,
        revokedBy: null,
      };
      const issuance = { jti: `${i}:${v()}`, requestId: id, tokenSha256: v(), kid: v(), issuedAt: NOW, expiresAt: NOW + 600_000, grantedBy: { [scopes[0] as string]: v() } };
      const steps = [{ duty: v(), object: `${i}:${v()}`, step: v(), formerly: [v(), v()], endedAfter: NOW - 1 }];
      const actorHolders = actors.map((actor) => ({ identity: { iss: actor.iss, sub: actor.sub }, person: actor.person === null ? null : { key: actor.person, same: [actor.person] } }));
      // The token's event places it in the chain, where the audit listing finds it.
      const events: AuditEntry[] = [
        { type: r.int(2) ? 'request.created' : (v() as AuditEventType), actor: r.int(4) ? principal(i) : null, requestId: id, data: data() },
        { type: 'token.issued', actor: request.requester, requestId: id, data: data() },
      ];
      const facts = await store.admit(
        {
          now: NOW,
          holder: principalHolder,
          actors: actorHolders,
          proof: { jti: `${i}:${v()}`, expiresAt: NOW + 60_000 },
          conflicting: [v(), `${i}:${v()}`],
          limits: { live: 1_000, pending: 1_000 },
          breakGlass: reviewed ? { since: 0, cap: 5 } : undefined,
          duties: { steps, participants: [principalHolder, ...actorHolders] },
        },
        (found) => ({ admit: { request, issuance, events, ...(reviewed ? { reviewDueAt: NOW + 86_400_000 } : {}) }, result: found }),
      );
      // Nothing of what was read matched anything: every value read back as itself, no other.
      expect(facts.replayed).toBeUndefined();
      expect(facts.conflict).toBeUndefined();
      expect(facts.duty).toBeUndefined();
      return { request, issuance, steps, events, reviewed, principalHolder };
    }

    const N = 150;
    const admitted: Awaited<ReturnType<typeof admitOne>>[] = [];
    // All at once: each batch's operations share one transaction and its round trips.
    for (const group of chunks(Array.from({ length: N }, (_, i) => i), 100)) {
      admitted.push(...(await Promise.all(group.map((i) => admitOne(tag + i, i % 3 === 0)))));
    }

    // A change to each: an approval, a review, a revocation, each with hostile values; refusals and appends besides.
    const expectedEvents: AuditEntry[] = admitted.flatMap((a) => a.events);
    const changed = await Promise.all(
      admitted.map(async (a, index) => {
        const i = tag + index;
        const approval = {
          requestId: a.request.id,
          approver: principal(i),
          person: r.int(2) ? v() : null,
          decision: 'approve' as const,
          reason: v(2_000),
          digest: v(),
          at: NOW + 1,
        };
        const review = a.reviewed ? { outcome: 'unjustified' as const, notes: v(2_000), reviewer: principal(i), at: NOW + 2 } : undefined;
        const fields = { endedAt: NOW + 3, revokeReason: v(500), revokedBy: principal(i) };
        const events: AuditEntry[] = [{ type: 'request.revoked', actor: fields.revokedBy, requestId: a.request.id, data: data() }];
        expectedEvents.push(...events);
        const facts = await store.change(
          a.request.id,
          (state, found) => {
            expect(state?.request.id).toBe(a.request.id);
            return {
              transition: { from: ['issued'], to: 'revoked', fields },
              approval,
              participants: { steps: a.steps, participants: [{ identity: approval.approver, person: approval.person === null ? null : { key: approval.person, same: [approval.person] } }] },
              ...(review ? { review } : {}),
              events,
              result: found,
            };
          },
          { duties: { steps: a.steps, participants: [a.principalHolder] }, proof: { jti: `${i}:change:${v()}`, expiresAt: NOW + 60_000 } },
        );
        expect(facts).toEqual({});
        if (index % 3 === 1) {
          const refusal: AuditEntry = { type: 'request.refused', actor: principal(i), requestId: null, data: data() };
          expectedEvents.push(refusal);
          await store.refuse(refusal.actor as { iss: string; sub: string }, NOW, () => refusal);
        }
        if (index % 3 === 2) {
          const appended: AuditEntry[] = [{ type: v() as AuditEventType, actor: null, requestId: v(), data: data() }];
          expectedEvents.push(...appended);
          await store.append(appended);
        }
        return { ...a, approval, review, fields };
      }),
    );

    for (const group of chunks(changed, 50)) {
      await Promise.all(
        group.map(async ({ request, issuance, steps, approval, review, fields }) => {
          const expected = asJson({ ...request, status: 'revoked', ...fields });
          const { grantedBy: _grantedBy, ...issued } = issuance;
          expect(await store.requests.get(request.id)).toEqual(expected);
          expect(await store.requests.state(request.id)).toEqual({
            request: expected,
            approvals: [approval],
            review: review
              ? { requestId: request.id, dueAt: NOW + 86_400_000, outcome: review.outcome, notes: review.notes, reviewer: review.reviewer, reviewedAt: review.at, overdueAt: null }
              : undefined,
            issuance: issued,
          });
          expect(await store.issuances.get(issuance.jti)).toEqual(issued);
          const custody = await store.audit.custody((steps[0] as { duty: string }).duty, (steps[0] as { object: string }).object, undefined, 10);
          expect(custody.map((c) => [c.step, c.position, c.state.request.id])).toEqual([[(steps[0] as { step: string }).step, 1, request.id]]);
          const listed = await store.audit.issuances({ subject: request.requester.sub }, undefined, 10, NOW);
          expect([...listed.late, ...listed.next].map((row) => [row.requestId, row.taskId, row.justification, row.audience, row.authorizationDetails, row.revokeReason])).toEqual([
            [request.id, request.taskId, request.justification, request.audience, expected.authorizationDetails, fields.revokeReason],
          ]);
          const owned = await store.requests.owned({ ...request.requester, boundClaims: request.boundClaims }, { now: NOW }, undefined, 10);
          expect(owned).toEqual([expected]);
        }),
      );
    }

    // The chain holds every event as given, and verifies.
    const recorded = await store.events.after(headBefore, 100_000);
    const key = (event: Pick<AuditEntry, 'actor' | 'requestId' | 'data'> & { type: string }) =>
      canonicalJson({ type: event.type, actor: event.actor ?? null, requestId: event.requestId ?? null, data: event.data });
    expect(recorded.map(key).sort()).toEqual(expectedEvents.map(key).sort());
    expect(await verifyStoredChain(store.events)).toEqual({ ok: true, events: headBefore + expectedEvents.length, head: (await store.events.head())?.hash });

    // Nothing else: the schema as it was, every row from before still there as it was, tables no operation writes untouched.
    const after = await snapshot();
    expect(after.schema).toEqual(before.schema);
    for (const [table, rows] of before.rows) {
      const now = after.rows.get(table) ?? [];
      if (!WRITTEN.has(table)) expect(now, table).toEqual(rows);
      else expect(now.filter((row) => rows.includes(row)), table).toEqual(rows);
    }
    expect([...after.rows.keys()].sort()).toEqual([...before.rows.keys()].sort());
    const grew = (table: string) => (after.rows.get(table)?.length ?? 0) - (before.rows.get(table)?.length ?? 0);
    expect([grew('requests'), grew('issuances'), grew('approvals'), grew('break_glass_reviews'), grew('audit_events')]).toEqual([
      N, N, N, changed.filter((c) => c.review).length, expectedEvents.length,
    ]);
    expect(await store.requests.get(canary.request.id)).toEqual(asJson(canary.request));
    await canaryIntact();
    // The log still refuses to be rewritten.
    await expect(db.sql("UPDATE audit_events SET data = '{}' WHERE seq = 1")).rejects.toThrow(/append-only/);
  });
});

const DUTY_TYPE = "m'$jit$\\';--/*?$1";

describe('hostile values a caller sends, through the API', () => {
  let t: TestBroker;
  beforeAll(async () => {
    t = await startTestBroker({
      configure: (config) =>
        void Object.assign(config, {
          limits: { requestsPerMinute: 100_000, liveGrants: 100_000 },
          // authorization_details name objects of a configured duty's type: this one's is built to end a quote.
          duties: [{ name: 'model-release', type: DUTY_TYPE, steps: [{ name: 'read', scopes: ['artifacts:read'] }, { name: 'train', scopes: ['model:train'] }] }],
        }),
    });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('are answered, read back and recorded in the chain exactly as sent', async () => {
    const r = randomness(SEED + 8);
    // What the API takes: one line of no control character or bidirectional override; prose may hold tabs and newlines.
    const line = (max?: number) => hostile(r, max).replace(/[\p{Cc}\u202a-\u202e\u2066-\u2069]/gu, '') || "'";
    const prose = (max?: number) => hostile(r, max).replace(/[^\t\n\P{Cc}]|[\u202a-\u202e\u2066-\u2069]/gu, '') || '\\';
    await t.db.sql('CREATE TABLE jit_canary (n INTEGER NOT NULL)');
    await t.db.sql('INSERT INTO jit_canary (n) VALUES (1)');
    const auditor = await t.as.person('ivy', ['auditors']);
    const asked = await Promise.all(
      Array.from({ length: 30 }, async () => {
        // Claims the broker keeps with the grant: the job's repository and ref, and who started it.
        const token = await t.as.pipeline({ repository: `acme/${line()}`, ref: line(), actor: `pat${line()}` }, `repo:acme/${line()}`);
        const body = {
          task_id: line(256),
          scopes: ['artifacts:read'],
          audience: line(),
          justification: prose(2_000),
          authorization_details: [{ type: DUTY_TYPE, identifier: line(), actions: [line(), line()], locations: [line()], privileges: [] }],
        };
        const response = await t.http.post('/v1/credentials').set(bearer(token)).send(body);
        expect(response.status, JSON.stringify(response.body)).toBe(201);
        return { token, body, id: response.body.request_id as string };
      }),
    );
    for (const { token, body, id } of asked) {
      const view = await t.http.get(`/v1/credentials/${id}`).set(bearer(token));
      expect(view.status).toBe(200);
      expect(view.body).toMatchObject({ task_id: body.task_id, audience: body.audience, justification: body.justification, authorization_details: body.authorization_details });
      const events = await t.http.get(`/v1/audit/events?request_id=${id}`).set(bearer(auditor));
      const created = (events.body.items as { type: string; data: Record<string, unknown> }[]).find((event) => event.type === 'request.created');
      expect(created?.data).toMatchObject(body);
      // The object's chain of custody, found by its identifier.
      const custody = await t.http
        .get(`/v1/audit/duties?duty=model-release&identifier=${encodeURIComponent(body.authorization_details[0]?.identifier as string)}`)
        .set(bearer(auditor));
      expect(custody.status).toBe(200);
      expect(JSON.stringify(custody.body)).toContain(id);
    }
    expect(await verifyStoredChain(t.broker.store.events)).toMatchObject({ ok: true });
    expect(await t.db.sql('SELECT n FROM jit_canary')).toEqual([{ n: 1 }]);
    await expect(t.db.sql("UPDATE audit_events SET data = '{}' WHERE seq = 1")).rejects.toThrow(/append-only/);
  });
});
