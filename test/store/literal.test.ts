import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lockStatement } from '../../src/store/postgres/batch.js';
import { fill, inline, literal } from '../../src/store/postgres/literal.js';
import { createTestDatabase, ENGINE, type TestDatabase } from '../helpers/engine.js';
import { tempDir } from '../helpers/temp.js';

/**
 * The PostgreSQL engine writes values into statements as literals, to send several statements
 * in one round trip (postgres/literal.ts). Whatever a caller puts in a value, PostgreSQL must read
 * back exactly that value, and never SQL: checked against the server itself.
 */

let db: TestDatabase;
/** A connection of its own: the test helper's would number the `?` of a value as placeholders. */
let client: pg.Client;
beforeAll(async () => {
  if (ENGINE !== 'postgres') return;
  db = await createTestDatabase(tempDir('jit-literal-'));
  client = new pg.Client({ connectionString: db.url });
  await client.connect();
});
afterAll(async () => {
  await client?.end();
  await db?.drop();
});
const select = async <T>(text: string) => (await client.query(text)).rows[0] as T;

const hostile = [
  '',
  "it's",
  "'; DROP TABLE requests; --",
  "\\'; DROP TABLE requests; --",
  'back\\slash at the end \\',
  "E'\\x27'",
  '$$ dollar $$ quoting $tag$',
  '-- a comment\n/* and another',
  'ünïcödé ✓ 𝄞',
  '?, ?, ?',
  '\n\t\r',
  // Dollar quoting's tag, in the text and at its end (where the closing tag would complete it).
  "$jit$'; DROP TABLE requests; --",
  "\\$jit$'); DROP TABLE requests; --",
  "it's $jit",
  'back\\slash $jit',
  '$jit$',
  "'$ji",
  "jit$'",
  "'ünï$jitü$'",
  '{"a":"say \\"hi\\" it\'s"}',
];

describe.runIf(ENGINE === 'postgres')('values written in as literals', () => {
  it('are read back by PostgreSQL exactly as given, text never becoming SQL', async () => {
    for (const value of hostile) {
      expect(await select(`SELECT ${literal(value)}::text AS v`)).toEqual({ v: value });
    }
  });

  it('keep numbers, negative ones too, booleans and null', async () => {
    const row = await select(
      `SELECT ${literal(1_767_225_600_000)}::bigint AS big, 5 - ${literal(-1)} AS minus, ${literal(true)} AS yes, ${literal(false)} AS no, ${literal(null)}::text AS nothing`,
    );
    expect(row).toEqual({ big: '1767225600000', minus: 6, yes: true, no: false, nothing: null });
  });

  it('fill a statement\'s placeholders in order, and refuse a count that does not match', () => {
    expect(inline('SELECT ? WHERE a = ? AND b IN (?, ?)', ['x', 1, null, false])).toBe("SELECT 'x' WHERE a = 1 AND b IN (NULL, FALSE)");
    expect(inline('SELECT ?, ?', ['?', "$'"])).toBe("SELECT '?',  $jit$$'$jit$");
    expect(() => inline('SELECT ?', [])).toThrow(/1 placeholders was given 0 values/);
  });

  it('name lock keys as text in the batch\'s lock statement, whatever they hold', async () => {
    // Keys carry callers' claims: a `$'` or `$&` there must not be read as a replacement pattern.
    const keys = [...hostile, "$'", '$&', '$1'];
    await client.query('BEGIN');
    try {
      const { text, literals } = lockStatement(keys);
      await client.query(fill(text, literals));
      const held = await select<{ n: string }>("SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()");
      const distinct = await select<{ n: string }>(`SELECT count(DISTINCT hashtextextended(k, 0)) AS n FROM unnest(ARRAY[${keys.map(literal).join(', ')}]) k`);
      expect(Number(held.n)).toBe(Number(distinct.n));
      expect(Number(held.n)).toBe(keys.length);
    } finally {
      await client.query('ROLLBACK');
    }
  });

  it('dollar-quote text with a quote or a backslash, unless it could close the quote itself', () => {
    expect(literal('plain')).toBe("'plain'");
    expect(literal('{"a":"\\"it\'s\\""}')).toBe(' $jit${"a":"\\"it\'s\\""}$jit$');
    expect(literal("it's $jit$")).toBe("'it''s $jit$'");
    expect(literal("it's $jit")).toBe("'it''s $jit'");
    expect(literal('a\\b $jit')).toBe(" E'a\\\\b $jit'");
  });

  it('refuse what PostgreSQL text cannot hold (NUL), and what is no SQL value', () => {
    expect(() => literal('a\0b')).toThrow(expect.objectContaining({ code: '22021' }));
    expect(() => literal(Number.NaN)).toThrow();
    expect(() => literal({})).toThrow();
  });
});
