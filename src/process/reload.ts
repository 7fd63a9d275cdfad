import type { Logger } from 'pino';
import type { BrokerConfig } from '../config/index.js';

/**
 * What a reload did; `file` is the one at fault when refused (a `jwksFile`, say). `text` is the
 * configuration file's text as applied, for the other workers of several; it may hold a
 * password and is never logged.
 */
export type ReloadOutcome =
  | { status: 'applied'; file: string; sha256: string; text: string; changed: string[]; devIssuers: string[] }
  | { status: 'refused'; file: string; problems: string[] };

export const devIssuerNames = (config: BrokerConfig) => config.identity.issuers.filter((issuer) => issuer.dev).map((issuer) => issuer.name);

/** Says loudly, at start and at each reload, that development issuers are trusted. */
export function warnOfDevIssuers(logger: Logger, file: string, devIssuers: readonly string[]): void {
  if (devIssuers.length === 0) return;
  logger.warn(
    { file, dev_issuers: devIssuers },
    'DEVELOPMENT CONFIGURATION: local dev identity issuers are trusted; anyone who can read their key directory can be anyone. Never run this in production.',
  );
}

/** The one log line of a reload (`more` says, say, how many workers applied it) and the warning it may call for. */
export function logReload(logger: Logger, outcome: ReloadOutcome, more: Record<string, unknown> = {}): void {
  if (outcome.status === 'refused') {
    logger.error({ file: outcome.file, problems: outcome.problems, ...more }, 'invalid configuration; the running configuration stays');
    return;
  }
  logger.info({ file: outcome.file, sha256: outcome.sha256, changed: outcome.changed, ...more }, 'configuration reloaded');
  warnOfDevIssuers(logger, outcome.file, outcome.devIssuers);
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
