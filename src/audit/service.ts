import { actClaim } from '../delegation/index.js';
import { requireRole, type Identity } from '../identity/index.js';
import { toIso, type Clock } from '../shared/clock.js';
import { decodeCursor, encodeCursor, keysetPage } from '../shared/cursor.js';
import { InvalidRequest } from '../shared/errors.js';
import { effectiveStatus } from '../requests/index.js';
import { objectKey } from '../shared/authorization-details.js';
import type { Settings } from '../settings/index.js';
import type { AuditEventRecord, CustodyRecord, EntitlementUse, EventFilter, IssuanceAuditRecord, IssuanceFilter, Store } from '../store/index.js';
import type { Keyring } from '../tokens/index.js';
import { verifyStoredChain, type ChainVerdict } from './chain.js';
import { EMPTY_HEAD, readCheckpoint, signCheckpoint, verdictView, verifyChainHolds, type Checkpoint, type VerdictView } from './checkpoint.js';

/** Rows per page when an export streams every match. */
export const EXPORT_PAGE_SIZE = 1_000;
/** Seqs of the chain one page of events filtered by type or time reads at most. */
export const EVENT_SCAN_BUDGET = 10_000;

/** CONTRACT section 4, one row of `GET /v1/audit/issuances`, plus the justification (the "why"). */
export function issuanceView(record: IssuanceAuditRecord) {
  return {
    jti: record.jti,
    request_id: record.requestId,
    requester: record.requester,
    task_id: record.taskId,
    scopes: record.scopes,
    audience: record.audience,
    justification: record.justification,
    issued_at: toIso(record.issuedAt),
    expires_at: toIso(record.expiresAt),
    status: record.status,
    approvers: record.approvers.map((a) => ({ iss: a.iss, sub: a.sub, at: toIso(a.at) })),
    break_glass: record.breakGlass,
    ...(record.authorizationDetails !== null ? { authorization_details: record.authorizationDetails } : {}),
    ...(record.act !== null ? { act: actClaim(record.act) } : {}),
    ...(record.revokedAt !== null ? { revoked_at: toIso(record.revokedAt), revoke_reason: record.revokeReason } : {}),
  };
}
export type IssuanceView = ReturnType<typeof issuanceView>;

/** CONTRACT section 4, one event of `GET /v1/audit/events`. */
export function eventView(event: AuditEventRecord) {
  return {
    seq: event.seq,
    at: event.at,
    type: event.type,
    actor: event.actor,
    ...(event.requestId !== null ? { request_id: event.requestId } : {}),
    data: event.data,
    prev_hash: event.prevHash,
    hash: event.hash,
  };
}
export type EventView = ReturnType<typeof eventView>;

/** CONTRACT section 4, one row of `GET /v1/audit/duties`: who took part in which step, and how it ended. */
export function custodyView({ step, state: { request, approvals } }: CustodyRecord, now: number) {
  return {
    step,
    request_id: request.id,
    status: effectiveStatus(request, now),
    requester: request.requester,
    ...(request.initiator !== null ? { initiator: request.initiator } : {}),
    ...(request.act !== null ? { act: actClaim(request.act) } : {}),
    approvals: approvals.map((a) => ({ iss: a.approver.iss, sub: a.approver.sub, decision: a.decision, reason: a.reason, at: toIso(a.at) })),
    created_at: toIso(request.createdAt),
    ...(request.issuedAt !== null ? { issued_at: toIso(request.issuedAt) } : {}),
  };
}
export type CustodyView = ReturnType<typeof custodyView>;

/** CONTRACT section 4, one row of `GET /v1/audit/entitlements`: a grant and how much it was used. */
export function entitlementView(use: EntitlementUse) {
  return { policy: use.policy, scope: use.scope, issued: use.issued, last_issued_at: use.lastIssuedAt === null ? null : toIso(use.lastIssuedAt) };
}
export type EntitlementView = ReturnType<typeof entitlementView>;

/** `GET /v1/audit/entitlements` counts tokens issued in this window unless asked for another. */
export const ENTITLEMENTS_WINDOW_MS = 30 * 86_400_000;

export type AuditService = ReturnType<typeof createAuditService>;

export interface AuditServiceDeps {
  store: Store;
  /** The rules in force for a caller: the entitlements report lists what they grant. */
  settings: (caller?: Identity) => Pick<Settings, 'policy'>;
  clock: Clock;
  /** Signs checkpoints with the broker's current signing key. */
  keyring: Pick<Keyring, 'signingKey'>;
  /** The broker's own `iss`. */
  issuer: string;
}

/** The auditor's questions, for the `auditor` and `admin` roles. */
export function createAuditService({ store, clock, keyring, issuer, settings }: AuditServiceDeps) {
  let walking: Promise<ChainVerdict> | undefined;
  /**
   * One page of issuances in time order. Times are taken before a token is committed, so one
   * recorded while an auditor pages (in the millisecond of the page's last row, behind a slower
   * commit, from another replica's clock) can land behind the cursor: the cursor also carries how
   * far the chain had grown, and such a token opens a later page. No row is skipped or repeated.
   */
  async function issuancePage(filter: IssuanceFilter, cursor: string | undefined, limit: number) {
    const key = decodeCursor(cursor, ['number', 'string', 'number'] as const);
    const after = key && { issuedAt: key[0], requestId: key[1], seq: key[2] };
    const { late, next, seen } = await store.audit.issuances(filter, after, limit, clock());
    if (after && late.length > limit) {
      const shown = late.slice(0, limit);
      return { items: shown.map(issuanceView), next_cursor: encodeCursor([after.issuedAt, after.requestId, (shown.at(-1) as IssuanceAuditRecord).seq]) };
    }
    const onward = next.slice(0, limit - late.length);
    const last = onward.at(-1) ?? after;
    const more = next.length > onward.length && last !== undefined;
    return { items: [...late, ...onward].map(issuanceView), next_cursor: more ? encodeCursor([last.issuedAt, last.requestId, seen]) : null };
  }
  /**
   * One page of events by seq. Filtered by type or time only, the chain is read row by row, so a
   * page reads at most `EVENT_SCAN_BUDGET` seqs of it: a filter that matches little gives short
   * pages, even empty ones, with a cursor to read on, never one read of the whole log.
   */
  async function eventPage(filter: EventFilter, cursor: string | undefined, limit: number) {
    const after = decodeCursor(cursor, ['number'] as const)?.[0] ?? 0;
    const scanned = filter.requestId === undefined && (filter.type !== undefined || filter.since !== undefined || filter.until !== undefined);
    const through = scanned ? after + EVENT_SCAN_BUDGET : undefined;
    // The head before the page: the chain holds every seq up to it, so a page read after it saw
    // each of them up to `through`. Read after the page, a head past `through` may have grown
    // past it meanwhile, and the cursor would pass over events the page never saw.
    const head = scanned ? ((await store.events.head())?.seq ?? 0) : 0;
    const rows = await store.audit.events(filter, after, limit + 1, through);
    const page = rows.slice(0, limit);
    if (rows.length > limit) return { items: page.map(eventView), next_cursor: encodeCursor([(page.at(-1) as AuditEventRecord).seq]) };
    const more = through !== undefined && through < head;
    return { items: page.map(eventView), next_cursor: more ? encodeCursor([through]) : null };
  }
  /** Every page of a listing, one at a time: an export never holds more than a page in memory. */
  async function* allPages<T>(page: (cursor: string | undefined, limit: number) => Promise<{ items: T[]; next_cursor: string | null }>) {
    let cursor: string | undefined;
    do {
      const { items, next_cursor } = await page(cursor, EXPORT_PAGE_SIZE);
      yield items;
      cursor = next_cursor ?? undefined;
    } while (cursor);
  }
  const auditorOnly = (identity: Identity) => requireRole(identity, 'auditor', 'admin');

  return {
    /** Refuses (403) anyone but auditors and admins; every method below checks it too. */
    authorize: auditorOnly,
    issuances(identity: Identity, filter: IssuanceFilter, cursor: string | undefined, limit: number) {
      auditorOnly(identity);
      return issuancePage(filter, cursor, limit);
    },
    /**
     * What the running configuration grants against what was used: one row per (policy, scope)
     * it grants, in configuration order, with the tokens issued under it since `since` (default
     * 30 days ago). `issued: 0` is a grant nobody used in that time: the drift to look at.
     */
    async entitlements(identity: Identity, since: number | undefined) {
      auditorOnly(identity);
      const from = since ?? clock() - ENTITLEMENTS_WINDOW_MS;
      const used = await store.audit.entitlements(settings(identity).policy.grants(), from);
      return { since: toIso(from), items: used.map(entitlementView), next_cursor: null };
    },
    /**
     * The chain of custody of one object: every request that named it for a step of the duty,
     * oldest first, as the broker recorded them (under the object's lock, so in the order it
     * judged them): a page never passes a step recorded after it was read.
     */
    custody(identity: Identity, duty: string, identifier: string, cursor: string | undefined, limit: number) {
      auditorOnly(identity);
      const now = clock();
      return keysetPage({
        cursor,
        shape: ['number'] as const,
        limit,
        read: (after, count) => store.audit.custody(duty, objectKey(identifier), after?.[0], count),
        key: (row) => [row.position],
        view: (rows) => rows.map((row) => custodyView(row, now)),
      });
    },
    exportIssuances(identity: Identity, filter: IssuanceFilter): AsyncIterable<IssuanceView[]> {
      auditorOnly(identity);
      return allPages((cursor, limit) => issuancePage(filter, cursor, limit));
    },
    events(identity: Identity, filter: EventFilter, cursor: string | undefined, limit: number) {
      auditorOnly(identity);
      return eventPage(filter, cursor, limit);
    },
    exportEvents(identity: Identity, filter: EventFilter): AsyncIterable<EventView[]> {
      auditorOnly(identity);
      return allPages((cursor, limit) => eventPage(filter, cursor, limit));
    },
    /**
     * The chain verified link by link; given a checkpoint (a JWS from `checkpoint`, the
     * `audit.checkpoint` webhook or event), also that the chain still holds its head.
     */
    async verify(identity: Identity, checkpoint?: string): Promise<VerdictView> {
      auditorOnly(identity);
      let head;
      if (checkpoint !== undefined) {
        head = await readCheckpoint(checkpoint, { issuer, keys: store.keys });
        if (!head) throw new InvalidRequest('The checkpoint does not verify: it is not a checkpoint+jwt signed by this broker.');
      }
      // One walk of the chain at a time, shared by every caller who asks meanwhile (each then
      // checks its own checkpoint): callers asking together cannot multiply a walk of the whole log.
      walking ??= verifyStoredChain(store.events).finally(() => {
        walking = undefined;
      });
      return verdictView(await verifyChainHolds(store.events, head, await walking));
    },
    /** The chain head, signed once it is durable; reading it appends nothing. */
    async checkpoint(identity: Identity): Promise<Checkpoint> {
      auditorOnly(identity);
      return signCheckpoint(keyring, issuer, (await store.events.durableHead()) ?? EMPTY_HEAD, clock());
    },
  };
}
