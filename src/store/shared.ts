import { canonicalJson } from '../shared/canonical-json.js';
import { StartRefused } from '../shared/errors.js';
import type { Holder, TransitionFields } from './contract.js';
import { LIVE_STATUSES, type Principal, type RequestRecord, type RequestStatus } from './records.js';

/**
 * Small pieces of the store that both its code and its callers compute the same way.
 */

/** `LIVE_STATUSES` as an SQL list, for `status IN ${LIVE_SQL}` on both engines. */
export const LIVE_SQL = `(${LIVE_STATUSES.map((status) => `'${status}'`).join(', ')})`;

export const isLive = (status: RequestStatus): boolean => LIVE_STATUSES.includes(status);

/**
 * The key an identity is counted under in the tables shared with person keys (rates, live
 * scopes, loads). Person keys start with `n:`, `i:` or `u:`, so the two kinds never meet. The
 * same text is written by the migration that backfilled these tables: `'identity:' || iss || char(10) || sub`.
 */
export const identityHolder = (identity: Principal): string => `identity:${identity.iss}\n${identity.sub}`;

/** The keys a request is recorded under: its identity's, and its person's when it has one. */
export const recordedKeys = (identity: Principal, person: string | null): string[] =>
  person === null ? [identityHolder(identity)] : [identityHolder(identity), person];

/** The keys a holder's counts are read from: its identity's, and every key of its person. */
export const countedKeys = (holder: Holder): string[] => [identityHolder(holder.identity), ...(holder.person?.same ?? [])];

/** The keys whose separation index (live scopes) a request is in: its principal's. */
export const principalKeys = (request: Pick<RequestRecord, 'requester' | 'person'>): string[] => recordedKeys(request.requester, request.person);

/** Every key a request counts under for limits, as recorded: its principal's and each actor's. A request's holders never change. */
export const requestKeys = (request: Pick<RequestRecord, 'requester' | 'person' | 'act'>): string[] => [
  ...new Set([...principalKeys(request), ...(request.act ?? []).flatMap((actor) => recordedKeys(actor, actor.person))]),
];

/**
 * The keys a request counts under only through its actors: each actor's, and the person's who
 * launched one, less the principal's (a person both is counted once, as the principal).
 */
export const actingKeys = (request: Pick<RequestRecord, 'requester' | 'person' | 'act'>): string[] => {
  if (!request.act || request.act.length === 0) return [];
  const principal = new Set(principalKeys(request));
  return requestKeys(request).filter((key) => !principal.has(key));
};

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
  if (fields.dpopJkt !== undefined) columns.push(['dpop_jkt', fields.dpopJkt]);
  if (fields.approvalsRequired !== undefined) columns.push(['approvals_required', fields.approvalsRequired]);
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

/** `?, ?, ?`: placeholders for a list of `n` values. */
export const marks = (n: number): string => Array.from({ length: n }, () => '?').join(', ');

/** A database migrated by a newer release than this one: the operator's to fix (exit 78), so no worker is started again. */
export class SchemaTooNew extends StartRefused {
  constructor(readonly versions: number[]) {
    super(
      'schema_too_new',
      `the database holds schema version${versions.length > 1 ? 's' : ''} ${versions.join(', ')}, which this release does not know: a newer release migrated it. Run that release, or restore the backup taken before the upgrade.`,
    );
  }
}
