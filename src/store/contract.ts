import type {
  ApprovalRecord,
  AuditEntry,
  AuditEventRecord,
  AuditEventType,
  BreakGlassReviewRecord,
  EntitlementUse,
  EventFilter,
  GrantKey,
  IssuanceAuditRecord,
  IssuancePosition,
  IssuanceFilter,
  IssuanceRecord,
  NewIssuance,
  Principal,
  RequestRecord,
  RequestStatus,
  ReviewOutcome,
  SigningKeyRecord,
} from './records.js';
import type { RateWindow } from '../shared/rate-window.js';
import type { ChainLink } from '../shared/chain-hash.js';

/**
 * The broker's records, behind one small contract with an implementation per engine
 * (`sqlite/`, `postgres/`). Reads return what is committed. Every change is one operation that
 * the engine makes atomic its own way (SQLite: one write transaction, group-committed with
 * others; PostgreSQL: one transaction under per-identity locks): the checks a change depends on
 * are read inside it, so no other request, process or replica can slip between the check and
 * the write. A change and the audit events that record it commit together, and a returned
 * promise means the commit is durable. Domain code decides; the engine only loads the facts the
 * decision needs and applies what it decided.
 *
 * Decision callbacks run inside the operation: they must be synchronous and pure, and may throw
 * (a `BrokerError`) to abandon the operation without writing anything.
 *
 * A failure of the engine itself (disk full, lost connection, lock timeout) rejects with
 * `Unavailable`: nothing was written.
 */
export interface Store {
  readonly engine: 'sqlite' | 'postgres';

  requests: {
    get(id: string): Promise<RequestRecord | undefined>;
    /** A request with everything its view shows; undefined when there is no such request. */
    state(id: string): Promise<RequestState | undefined>;
    /** The same for several requests at once (listings), in the order given. */
    states(requests: readonly RequestRecord[]): Promise<RequestState[]>;
    /**
     * The owner's requests, newest first, after the given position: those it asked for from its
     * job, and the delegated ones it is an actor of under its identity (whether in its job is the
     * caller's to judge, from each actor's bound claims).
     */
    owned(owner: Owner, filter: OwnedFilter, after: Position | undefined, limit: number): Promise<RequestRecord[]>;
    /** Pending requests not past their deadline, oldest first, after the given position. */
    pending(now: number, after: Position | undefined, limit: number): Promise<RequestRecord[]>;
  };
  issuances: {
    get(jti: string): Promise<IssuanceRecord | undefined>;
    /** Revoked tokens not yet expired, by jti. */
    revokedUnexpired(now: number, afterJti: string | undefined, limit: number): Promise<IssuanceRecord[]>;
  };
  reviews: {
    /** Break-glass requests whose review is pending (or done), by due time. */
    list(state: 'pending' | 'done', after: { dueAt: number; requestId: string } | undefined, limit: number): Promise<{ request: RequestRecord; dueAt: number }[]>;
    /** How many reviews are pending, and how many of those are overdue (for metrics). */
    pendingCounts(): Promise<{ pending: number; overdue: number }>;
  };
  events: {
    head(): Promise<{ seq: number; hash: string } | undefined>;
    /**
     * The head once everything up to it is durable: the one a checkpoint may sign. A read may
     * see a commit before it is durable (SQLite syncs the WAL after COMMIT); a signed head lost
     * to a power failure would have its holder told the chain is truncated. A transaction of its
     * own, after those committed before it: `head` for anything else.
     */
    durableHead(): Promise<{ seq: number; hash: string } | undefined>;
    /** Events with seq above `afterSeq`, in order. */
    after(afterSeq: number, limit: number): Promise<AuditEventRecord[]>;
    /** The links of the chain above `afterSeq`, in order, each hashed text exactly as its row stores it: what verification reads. */
    links(afterSeq: number, limit: number): Promise<ChainLink[]>;
    /** The event at `seq`, if the chain still holds it. */
    at(seq: number): Promise<AuditEventRecord | undefined>;
    /** The newest event of `type`, if any. */
    latest(type: AuditEventType): Promise<AuditEventRecord | undefined>;
  };
  audit: {
    /**
     * The chain of custody of one object: every request that named it for a step of the duty, in
     * the order they were recorded, after the given place in that order (`position`).
     */
    custody(duty: string, object: string, after: number | undefined, limit: number): Promise<CustodyRecord[]>;
    /**
     * Issuances matching `filter` not yet listed from `after`: first those committed since behind
     * its position (`late`, by seq, up to `limit` + 1), then those past it in (issued_at, request id)
     * order (`next`, enough to fill `limit` + 1), each as far as the chain reached when read (`seen`).
     */
    issuances(
      filter: IssuanceFilter,
      after: IssuancePosition | undefined,
      limit: number,
      now: number,
    ): Promise<{ late: IssuanceAuditRecord[]; next: IssuanceAuditRecord[]; seen: number }>;
    /** Events matching `filter`, in seq order, after `afterSeq`. */
    events(filter: EventFilter, afterSeq: number, limit: number, throughSeq?: number): Promise<AuditEventRecord[]>;
    /**
     * For each grant, in the order given, the tokens issued at or after `since` holding that
     * scope under that policy (children, delegated and break-glass ones included), and the latest.
     */
    entitlements(grants: readonly GrantKey[], since: number): Promise<EntitlementUse[]>;
  };
  keys: {
    /** Keys not retired, newest first. */
    active(): Promise<SigningKeyRecord[]>;
    /** A key by its kid, retired or not: what it signed (a checkpoint) may outlive it in the JWKS. */
    get(kid: string): Promise<SigningKeyRecord | undefined>;
    /**
     * Adds the signing key `decide` returns, judged on the keys not retired (newest first) under
     * the lock, with its event; false when `decide` declines (another process rotated first).
     */
    add(decide: (active: SigningKeyRecord[]) => SigningKeyRecord | false, event: (key: SigningKeyRecord) => AuditEntry): Promise<boolean>;
    /**
     * Retires a key at `now` when no token signed by it expires after `expiredBy`, with its event;
     * its sealed private half goes with it.
     */
    retire(kid: string, now: number, expiredBy: number, event: AuditEntry): Promise<boolean>;
    /**
     * Keeps the sealed private half of an unretired key that has none yet (one a key file held),
     * with its event; false when it has one already or is retired.
     */
    seal(kid: string, sealedPrivateKey: string, event: AuditEntry): Promise<boolean>;
  };

  /** A new request: the facts it is judged on, the judgement, and what it writes, as one operation. */
  admit<R>(probe: AdmissionProbe, decide: (facts: AdmissionFacts) => Admission<R>): Promise<R>;
  /**
   * A change to one request, judged on its current state (undefined when it does not exist) and,
   * given `duties`, on whether those participants took part in another step of its objects.
   */
  change<R>(
    id: string,
    decide: (state: RequestState | undefined, facts: ChangeFacts) => RequestChange<R>,
    options?: { duties?: DutyProbe; descendants?: boolean | 'all'; proof?: ProofUse },
  ): Promise<R>;
  /**
   * A refusal that changes nothing else, counted toward the caller's refusals this minute:
   * `decide`, given how many of them were recorded one by one already, returns the event that
   * records this one, or nothing to have it only counted (into the scheduler's one event).
   */
  refuse(caller: Principal, now: number, decide: (recordedThisMinute: number) => AuditEntry | undefined): Promise<void>;
  /** Appends events that record no other change (start-up, key retirement, checkpoints, failed webhooks). */
  append(entries: readonly AuditEntry[]): Promise<AuditEventRecord[]>;
  /**
   * Appends `entry` only while the newest event of its type is still the one at `latestSeq` (0:
   * none yet), judged under the chain's lock; undefined when another process appended one first.
   * Periodic work (checkpoints) is done once however many processes run it at the same moment.
   */
  appendIfLatest(entry: AuditEntry, latestSeq: number): Promise<AuditEventRecord | undefined>;

  /**
   * Scheduler sweeps: each moves at most `limit` due records, with one event each, and returns
   * them; a caller repeats until fewer than `limit` come back. Records another process is
   * sweeping at the same moment are left to it.
   */
  sweep: {
    /** Issued grants past their token's expiry: `expired`. */
    grants(now: number, limit: number, event: (grant: RequestRecord, jti: string | null) => AuditEntry): Promise<RequestRecord[]>;
    /** Pending and approved requests past their deadline: `expired`. */
    requests(now: number, limit: number, event: (request: RequestRecord) => AuditEntry): Promise<RequestRecord[]>;
    /** Pending reviews past due, flagged once. */
    overdueReviews(now: number, limit: number, event: (review: BreakGlassReviewRecord) => AuditEntry): Promise<RequestRecord[]>;
    /**
     * Closed minutes whose refusals were counted rather than recorded: one event each; then up to
     * `limit` minutes, rate windows and loads with nothing left to say are forgotten. `more` when
     * any of them took a full `limit`: more may be due.
     */
    refusals(now: number, limit: number, event: (tally: RefusalTally) => AuditEntry): Promise<{ reported: number; more: boolean }>;
    /** DPoP proof jtis past their window: forgotten (a proof that old is refused as stale anyway). */
    proofs(now: number, limit: number): Promise<number>;
  };

  /** Throws `Unavailable` unless the store can take a write now (for /readyz). */
  probe(): Promise<void>;
  close(): Promise<void>;
}

/** Who owns a request: its requester and, for an issuer with `bindClaims`, the job. */
export interface Owner extends Principal {
  boundClaims: Record<string, unknown> | null;
}

export interface OwnedFilter {
  /** The status as callers see it (a live request past its deadline is `expired`). */
  status?: RequestStatus | undefined;
  now: number;
}

/** A listing position: the sort key of the last row returned. */
export interface Position {
  createdAt: number;
  id: string;
}

/** A request with what its view shows. */
export interface RequestState {
  request: RequestRecord;
  approvals: ApprovalRecord[];
  review: BreakGlassReviewRecord | undefined;
  issuance: IssuanceRecord | undefined;
  /** Given `descendants` to `change`: its live descendants (child tokens, theirs, ...), with their tokens' jtis; given `'all'`, ended ones too. */
  descendants?: { request: RequestRecord; jti: string | null }[];
}

/** Fields a status transition may set besides the status itself. */
export interface TransitionFields {
  expiresAt?: number;
  decidedAt?: number;
  issuedAt?: number;
  endedAt?: number;
  revokeReason?: string;
  revokedBy?: Principal | null;
  /** The key the collected token is bound to. */
  dpopJkt?: string | null;
  /** Raised when a reload has asked more approvals of a waiting request's scopes. */
  approvalsRequired?: number;
}

/** What one change to a request writes; `transition.from` is checked again when it is applied. */
export interface RequestChange<R> {
  transition?: { from: readonly RequestStatus[]; to: RequestStatus; fields?: TransitionFields };
  approval?: ApprovalRecord;
  /** Participants this change adds to the request's steps (an approver). */
  participants?: DutyProbe;
  /** Revokes these live descendants with the request, in the same transaction. */
  cascade?: { ids: readonly string[]; fields: TransitionFields };
  issuance?: NewIssuance;
  review?: { outcome: ReviewOutcome; notes: string; reviewer: Principal; at: number };
  events: AuditEntry[];
  result: R;
}

/**
 * Duties (CONTRACT section 1): the steps an operation takes part in, and who takes part. The
 * store looks for those participants in another step of the same objects, and records them.
 */
export interface DutyProbe {
  steps: readonly {
    duty: string;
    object: string;
    step: string;
    /** The step's former names: participations recorded under them are in this step. */
    formerly: readonly string[];
    /** Participations of grants that ended at or before this (ms) no longer bind (`within`). */
    endedAfter: number;
  }[];
  /** Who takes part: each is looked for among other steps' participants, and recorded as taking part in these. */
  participants: readonly Holder[];
}

/** A participation in the way: one of the participants took part in another step of the object. */
export interface DutyFinding {
  duty: string;
  object: string;
  step: string;
  requestId: string;
}

/** What a change is judged on besides the request's state. */
export interface ChangeFacts {
  duty?: DutyFinding;
  /** The proof given with the change was used before. */
  replayed?: boolean;
}

/** A DPoP proof's jti, remembered until its window ends (RFC 9449 section 11.1). */
export interface ProofUse {
  jti: string;
  expiresAt: number;
}

/** One request that named an object for a step of a duty (the chain of custody). */
export interface CustodyRecord {
  step: string;
  /** Its place in the object's chain: 1 for the first step recorded, and so on. */
  position: number;
  state: RequestState;
}

/** A person a request counts against, by the keys records keep (see `People` in identity/). */
export interface PersonHolder {
  /** The key this request is recorded under: the name as the caller's token gave it. */
  key: string;
  /** Every recorded key that is this person under the running configuration, `key` among them: counted as one. */
  same: readonly string[];
}

/** One holder a request counts against: an identity and, when one is known behind it, its person. */
export interface Holder {
  identity: Principal;
  person: PersonHolder | null;
}

/** Which facts an admission needs. None costs more as a caller's history grows. */
export interface AdmissionProbe {
  now: number;
  /** Who the request is for: separation, quotas and limits count for it. */
  holder: Holder;
  /** The actors of a delegated request: `limits` count for each of them as well. */
  actors: readonly Holder[];
  /** A child token's parent request: the admission reads it as it is now, and holds its lock. */
  parent?: string | undefined;
  /** A DPoP proof the request came with: used once, on any replica. */
  proof?: ProofUse | undefined;
  /** Scopes whose live grants would conflict with the request (separation rules). */
  conflicting: readonly string[];
  /** The live and pending limits: at one, the store also finds when the holder's soonest grant ends. */
  limits: { live: number; pending: number };
  /** Count break-glass grants issued after `since`, up to `cap`. */
  breakGlass?: { since: number; cap: number } | undefined;
  /** The steps the request takes part in, and its participants. */
  duties?: DutyProbe | undefined;
}

/** A count for the identity and for the person (0 without a person). */
export interface HolderCounts {
  identity: number;
  person: number;
}

/** What one holder already did and holds, for its limits. */
export interface HolderFacts {
  /** Credential requests in the last 60 seconds, before this one, by second (as of `now`). */
  recent: { identity: RateWindow; person: RateWindow };
  /** Live requests (pending, approved, issued): at a limit, those past their end are not counted. */
  live: HolderCounts;
  pending: HolderCounts;
  /** At a limit: the earliest deadline among the holder's live requests, asked for or held as an actor. */
  soonestEnd?: number | null;
  /** At a limit: the earliest deadline among its requests awaiting approval (what frees a pending place). */
  soonestPendingEnd?: number | null;
}

/** The principal's facts, and those of each actor. */
export interface AdmissionFacts extends HolderFacts {
  actors: HolderFacts[];
  /** Refusals of this identity recorded one by one in the current clock minute. */
  refusalsRecorded: number;
  /** A child's parent as it is now (undefined when the probe names one that does not exist). */
  parent?: RequestRecord | undefined;
  /** The probe's proof was used before (its jti seen within its window). */
  replayed?: boolean;
  /** The first live grant of either holder holding one of the conflicting scopes; `byPerson` when found through the person. */
  conflict?: { requestId: string; scopes: string[]; byPerson: boolean };
  breakGlass?: { identity: { count: number; oldest: number | null }; person: { count: number; oldest: number | null } };
  /** The first participation of one of the request's participants in another step of one of its objects. */
  duty?: DutyFinding;
}

/**
 * What an admission writes. Either way the request counts toward the caller's rate. A refusal
 * writes `event` when given, else it is only counted, and reported later in one aggregated event.
 */
export type Admission<R> =
  | { admit: { request: RequestRecord; issuance?: NewIssuance; reviewDueAt?: number; events: AuditEntry[] }; result: R }
  | { refuse: { event?: AuditEntry }; result: R };

/** Refusals of one identity in one minute that were counted instead of recorded. */
export interface RefusalTally {
  actor: Principal;
  minuteStart: number;
  count: number;
}
