import { canonicalJson } from '../shared/canonical-json.js';
import type { AdmissionFacts, AdmissionProbe, TransitionFields } from './contract.js';
import { LIVE_STATUSES, type Principal, type RequestStatus } from './records.js';

/**
 * What both engines compute the same way, so their records agree byte for byte.
 */

/** `LIVE_STATUSES` as an SQL list, for `status IN ${LIVE_SQL}` on both engines. */
export const LIVE_SQL = `(${LIVE_STATUSES.map((status) => `'${status}'`).join(', ')})`;

export const isLive = (status: RequestStatus): boolean => LIVE_STATUSES.includes(status);

/**
 * The key an identity is counted under in the tables shared with person keys (rates, live
 * scopes). Person keys start with `u:` or `i:`, so the two kinds never meet. The same text is
 * written by the migration that backfills these tables: `'identity:' || iss || char(10) || sub`.
 */
export const identityHolder = (identity: Principal): string => `identity:${identity.iss}\n${identity.sub}`;

/** The holders a request counts against: its identity, and its person when it has one. */
export const holderKeys = (identity: Principal, person: string | null): string[] =>
  person === null ? [identityHolder(identity)] : [identityHolder(identity), person];

/** A job's bound claims as stored and compared: canonical JSON, or '' for a request bound to no job. */
export const jobKey = (boundClaims: Record<string, unknown> | null | undefined): string =>
  boundClaims ? canonicalJson(boundClaims) : '';

export const MINUTE_MS = 60_000;
export const minuteStart = (now: number): number => Math.floor(now / MINUTE_MS) * MINUTE_MS;

/** The columns a status transition sets besides the status, with their values, in a fixed order. */
export function transitionColumns(fields: TransitionFields): [column: string, value: unknown][] {
  const columns: [string, unknown][] = [];
  if (fields.expiresAt !== undefined) columns.push(['expires_at', fields.expiresAt]);
  if (fields.decidedAt !== undefined) columns.push(['decided_at', fields.decidedAt]);
  if (fields.issuedAt !== undefined) columns.push(['issued_at', fields.issuedAt]);
  if (fields.endedAt !== undefined) columns.push(['ended_at', fields.endedAt]);
  if (fields.revokeReason !== undefined) columns.push(['revoke_reason', fields.revokeReason]);
  if (fields.revokedBy !== undefined) {
    columns.push(['revoked_by_iss', fields.revokedBy?.iss ?? null], ['revoked_by_sub', fields.revokedBy?.sub ?? null]);
  }
  return columns;
}

/** How a transition changes a holder's count of live and of pending requests. */
export function loadDelta(from: RequestStatus, to: RequestStatus): { live: number; pending: number } {
  return {
    live: isLive(from) && !isLive(to) ? -1 : 0,
    pending: from === 'pending_approval' && to !== 'pending_approval' ? -1 : 0,
  };
}

/** Whether a holder is at its live or pending limit: only then is its soonest deadline worth reading. */
export const atLimit = (facts: Pick<AdmissionFacts, 'live' | 'pending'>, probe: Pick<AdmissionProbe, 'limits'>): boolean =>
  Math.max(facts.live.identity, facts.live.person) >= probe.limits.live ||
  Math.max(facts.pending.identity, facts.pending.person) >= probe.limits.pending;

/** A database migrated by a newer release than this one. */
export class SchemaTooNew extends Error {
  constructor(readonly versions: number[]) {
    super(
      `the database holds schema version${versions.length > 1 ? 's' : ''} ${versions.join(', ')}, which this release does not know: a newer release migrated it. Run that release, or restore the backup taken before the upgrade.`,
    );
    this.name = 'SchemaTooNew';
  }
}
