/**
 * Values written into statements as SQL literals, for PostgreSQL's simple query protocol: the
 * only way node-postgres sends several statements in one round trip (it has no pipelining), and
 * a protocol that takes no parameters. They go as the arguments of EXECUTE of a prepared
 * statement, or in place of the text's `?` placeholders. Values are what the store binds: text,
 * numbers, booleans and null; anything else is a defect and throws. Text with a quote or a
 * backslash is dollar-quoted when it cannot hold the closing tag, else quoted as libpq's
 * PQescapeLiteral (and node-postgres's escapeLiteral) quotes it: quotes and backslashes doubled,
 * `E'...'` when it holds a backslash. Either way no value can end its literal early, whatever
 * standard_conforming_strings says; a NUL, which PostgreSQL text cannot hold and which would cut
 * the message short, is refused.
 */

/** Each statement text cut at its `?` placeholders, once per text. */
const pieces = new Map<string, readonly string[]>();
const piecesOf = (text: string): readonly string[] => {
  let parts = pieces.get(text);
  if (parts === undefined) {
    parts = text.split('?');
    pieces.set(text, parts);
  }
  return parts;
};

/** The literals of `params` for `text`, which must have a `?` placeholder for each. */
export function literals(text: string, params: readonly unknown[]): string[] {
  const placeholders = piecesOf(text).length - 1;
  if (placeholders !== params.length) throw new Error(`a statement with ${placeholders} placeholders was given ${params.length} values`);
  return params.map(literal);
}

/** `text` with `literals` (SQL already, from `literal`) in place of its `?` placeholders, in order. */
export function fill(text: string, literals: readonly string[]): string {
  const parts = piecesOf(text);
  if (parts.length - 1 !== literals.length) throw new Error(`a statement with ${parts.length - 1} placeholders was given ${literals.length} values`);
  let out = parts[0] as string;
  for (let i = 0; i < literals.length; i += 1) out += (literals[i] as string) + (parts[i + 1] as string);
  return out;
}

export const inline = (text: string, params: readonly unknown[]): string => fill(text, literals(text, params));

/** `?` placeholders numbered as PostgreSQL wants them (`$1`, `$2`, ...), once per statement text. */
const numberedTexts = new Map<string, string>();
export function numbered(text: string): string {
  let found = numberedTexts.get(text);
  if (found === undefined) {
    found = piecesOf(text).reduce((out, part, i) => (i === 0 ? part : `${out}$${i}${part}`), '');
    numberedTexts.set(text, found);
  }
  return found;
}

/** The tag of dollar-quoted literals (`$jit$...$jit$`): their text is taken as written. */
const TAG = '$jit$';

export function literal(value: unknown): string {
  if (value === null || value === undefined) return 'NULL';
  if (typeof value === 'string') {
    if (value.includes('\0')) throw new NulInText();
    const quote = value.includes("'");
    const backslash = value.includes('\\');
    if (!quote && !backslash) return `'${value}'`;
    // Dollar-quoted, nothing is escaped, so nothing is copied: a batch's append is a hundred
    // kilobytes of JSON within JSON, a backslash before every inner quote. It ends at the first
    // tag, so text holding the tag, or ending in what the closing tag would complete into one,
    // is quoted as libpq does instead.
    if (!value.includes(TAG) && !value.endsWith(TAG.slice(0, -1))) return ` ${TAG}${value}${TAG}`;
    const quoted = `'${quote ? value.replaceAll("'", "''") : value}'`;
    return backslash ? ` E${quoted.replaceAll('\\', '\\\\')}` : quoted;
  }
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new Error(`not a finite number: ${value}`);
    // In parentheses: `x - ?` must not become the comment `x --1`.
    return value < 0 ? `(${value})` : String(value);
  }
  if (typeof value === 'boolean') return value ? 'TRUE' : 'FALSE';
  if (typeof value === 'bigint') return value < 0n ? `(${value})` : String(value);
  throw new Error(`no SQL literal for a ${typeof value}`);
}

/**
 * What PostgreSQL itself answers to a NUL in text bound as a parameter (SQLSTATE 22021); said
 * too of a lone surrogate, which UTF-8 cannot carry either, where the broker refuses one.
 */
export class NulInText extends Error {
  readonly code = '22021';
  constructor(what = '0x00') {
    super(`invalid byte sequence for encoding "UTF8": ${what}`);
  }
}
