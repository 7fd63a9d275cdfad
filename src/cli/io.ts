import { parseArgs, type ParseArgsConfig } from 'node:util';
import { resolveBroker } from './broker.js';
import { argumentInMessage, CliError, EXIT, usage } from './errors.js';
import { resolveIdentity, type IdentitySource } from './identity.js';
import { NOT_SHOWING } from '../shared/invisible.js';
import type { CliIo } from './cli-io.js';

export { argumentInMessage, CliError, EXIT, usage };
export type { CliIo };

/**
 * Each character that does not show as the broker defines it (`NOT_SHOWING`: control and format
 * characters, default-ignorables such as variation selectors, the blank fillers, white space),
 * but those in `kept`; the console draws the same ones as markers.
 */
const unseen = (kept: string) => new RegExp(`(?![${kept}])[${NOT_SHOWING}]`, 'gu');
const UNSEEN_IN_TEXT = unseen(' ');
const UNSEEN_IN_JSON = unseen(' \\n');
const UNSEEN_IN_EXPORT = unseen(' \\n\\r\\t');

/**
 * Text from the broker or a token, made safe for a terminal: control characters, bidirectional
 * overrides and every other character that does not show (a filler, a variation selector, a line
 * separator) are shown as escapes, so a value cannot move the cursor, recolour, rewrite or hide
 * part of what the reader sees. A plain space stays one.
 */
export const shown = (text: string): string =>
  text.replace(UNSEEN_IN_TEXT, (c) => (c === '\n' ? '\\n' : c === '\t' ? '\\t' : `\\u{${c.codePointAt(0)?.toString(16)}}`));

/** A character as JSON escapes (two for one outside the BMP). */
const jsonEscape = (c: string): string => Array.from({ length: c.length }, (_, i) => `\\u${c.charCodeAt(i).toString(16).padStart(4, '0')}`).join('');

/**
 * A value as indented JSON, made safe for a terminal as `shown` does: the characters it escapes
 * are written as JSON escapes (`\u202e`), so the text still parses to the very same value.
 */
export const shownJson = (value: unknown): string => JSON.stringify(value, null, 2).replace(UNSEEN_IN_JSON, jsonEscape);

/**
 * An export's text (NDJSON or CSV, as the broker streams it) made safe for a terminal, line
 * breaks and tabs kept: in NDJSON as JSON escapes, so every line still parses to the broker's
 * value; in CSV as `shown` writes them. Only for a terminal: an export redirected to a file
 * keeps the broker's bytes.
 */
export const shownExport = (text: string, format: 'ndjson' | 'csv'): string =>
  text.replace(UNSEEN_IN_EXPORT, format === 'ndjson' ? jsonEscape : shown);

export type Options = ParseArgsConfig['options'];

type Parsed<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: O; allowPositionals: true; strict: true }>>;

/**
 * A command's arguments: its options, and the positional arguments it names in `takes`
 * (`['REQUEST_ID']`), each optional. One more is refused before anything is done, never ignored:
 * `jit show A B` showed A, and `jit deny A B` denied A alone, the person taking B for done too.
 */
export function parse<O extends Options>(args: string[], options: O, takes: readonly string[] = []): Parsed<O> {
  let parsed: Parsed<O>;
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw usage((error as Error).message);
  }
  const extra = parsed.positionals[takes.length];
  if (extra !== undefined) throw usage(unexpectedArgument(extra, takes));
  return parsed;
}

/** Says which argument a command does not take, and what it takes: a token given in its place is not shown. */
export const unexpectedArgument = (extra: string, takes: readonly string[]): string =>
  `unexpected argument "${argumentInMessage(extra)}": ${takes.length === 0 ? 'it takes no arguments' : `it takes only ${takes.join(' ')}`}; nothing was done`;

/** The broker's URL, for `jit audit verify` (see `resolveBroker`). */
export function brokerUrl(io: CliIo, values: { broker?: string | undefined }): string {
  return resolveBroker(io.env, values).url;
}

/** The caller's identity, for `jit audit verify`, which takes `--identity-file` only (see `resolveIdentity`). */
export function identityToken(io: CliIo, file: string | undefined): IdentitySource {
  return resolveIdentity(io, { 'identity-file': file });
}
