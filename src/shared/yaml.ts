import { isScalar, type Document, type ParseOptions, type DocumentOptions, type SchemaOptions } from 'yaml';

/**
 * Two keys of one map that read as one key once converted: `1` and `"1"`, `true` and `"true"`
 * become the same member, and the last would silently win over what a reviewer read first.
 */
const sameKeyText = (a: unknown, b: unknown): boolean => a === b || (isScalar(a) && isScalar(b) && String(a.value) === String(b.value));

/**
 * How the broker's YAML files (configuration, policy cases) are parsed: duplicate keys refused,
 * and nothing written to stderr. yaml prints a warning (an unresolved tag such as `!secret`)
 * with the line it is on, which may hold a webhook URL or a database password: warnings are
 * refused instead, by `yamlProblems`, in words that quote no line.
 */
export const YAML_OPTIONS: ParseOptions & DocumentOptions & SchemaOptions = { uniqueKeys: sameKeyText, logLevel: 'silent' };

/** The document's errors and warnings, each the first line of its message (which names the line and column, not its text). */
export const yamlProblems = (doc: Document): { pos: [number, number]; message: string }[] =>
  [...doc.errors, ...doc.warnings].map((problem) => ({ pos: problem.pos, message: problem.message.split('\n')[0] as string }));
