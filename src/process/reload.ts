import type { Logger } from 'pino';
import type { ConfigWarning } from '../config/index.js';

/**
 * What a reload did; `file` is the one at fault when refused (a `jwksFile`, say). `text` is the
 * configuration file's text as applied, for the other workers of several; it may hold a
 * password and is never logged.
 */
export type ReloadOutcome =
  | { status: 'applied'; file: string; sha256: string; text: string; changed: string[]; warnings: ConfigWarning[] }
  | { status: 'refused'; file: string; problems: string[] };

/** Says each of a configuration's warnings (config/warnings.ts), at start and at each reload. */
export function warnAbout(logger: Logger, file: string, warnings: readonly ConfigWarning[]): void {
  for (const { fields, message } of warnings) logger.warn({ file, ...fields }, message);
}

/** The one log line of a reload (`more` says, say, how many workers applied it) and the warning it may call for. */
export function logReload(logger: Logger, outcome: ReloadOutcome, more: Record<string, unknown> = {}): void {
  if (outcome.status === 'refused') {
    logger.error({ file: outcome.file, problems: outcome.problems, ...more }, 'invalid configuration; the running configuration stays');
    return;
  }
  logger.info({ file: outcome.file, sha256: outcome.sha256, changed: outcome.changed, ...more }, 'configuration reloaded');
  warnAbout(logger, outcome.file, outcome.warnings);
}

/**
 * One reload as several workers applied it: the first's file, and what changed for any of them. A
 * worker that started after the file was written already runs it and finds nothing changed; the
 * others do not, and the broker as a whole did change.
 */
export function appliedByAll(first: Extract<ReloadOutcome, { status: 'applied' }>, others: readonly ReloadOutcome[]): ReloadOutcome {
  const changed = new Set(first.changed);
  for (const outcome of others) if (outcome.status === 'applied') for (const section of outcome.changed) changed.add(section);
  return { ...first, changed: [...changed] };
}

// The primary of several workers and a worker, about a reload (SIGHUP to the primary).

/**
 * Primary to worker: reload the file; `record` for exactly one worker per reload, which reads the
 * file. The others are given `text`, the file as that worker applied it: every worker then runs
 * the same configuration, whatever the file holds by the time each reloads.
 */
export interface ReloadOrder {
  type: 'jit:reload';
  id: number;
  record: boolean;
  text?: string;
}

/** Worker to primary: what the order did. */
export interface ReloadReport {
  type: 'jit:reloaded';
  id: number;
  outcome: ReloadOutcome;
}

const isMessage = (message: unknown, type: string): boolean => typeof message === 'object' && message !== null && (message as { type?: unknown }).type === type;
export const isReloadOrder = (message: unknown): message is ReloadOrder => isMessage(message, 'jit:reload');
export const isReloadReport = (message: unknown): message is ReloadReport => isMessage(message, 'jit:reloaded');
