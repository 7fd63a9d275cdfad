import type { BrokerConfig } from '../config/index.js';
import { dutyConflict } from '../duties/index.js';
import type { Policy } from '../policy/index.js';
import type { ActClaim } from '../shared/act.js';
import { RateLimited, SeparationOfDuties, type BrokerError } from '../shared/errors.js';
import { record, secondsUntilBelow, total, type RateWindow } from '../shared/rate-window.js';
import { capText, REFUSALS_RECORDED_PER_MINUTE } from '../requests/index.js';
import type { AdmissionFacts, AdmissionProbe, AuditEntry, Holder, HolderFacts, Principal } from '../store/index.js';

const DAY_MS = 86_400_000;

export { REFUSALS_RECORDED_PER_MINUTE } from '../requests/index.js';

interface Ask {
  /** Whether the request would wait for approval (counts against `pendingRequests`). */
  pending: boolean;
  breakGlass: boolean;
  now: number;
}

/** Which facts the store must read for this request: only those a rule could turn on. */
export function admissionProbe(
  holder: Holder,
  scopes: readonly string[],
  policy: Policy,
  config: Pick<BrokerConfig, 'limits' | 'breakGlass'>,
  ask: Ask,
): AdmissionProbe {
  return {
    now: ask.now,
    holder,
    actors: [],
    conflicting: policy.conflictingScopes(scopes),
    limits: { live: config.limits.liveGrants, pending: config.limits.pendingRequests },
    breakGlass: ask.breakGlass ? { since: ask.now - DAY_MS, cap: config.breakGlass.maxPerIdentityPerDay } : undefined,
  };
}

type Whose = [whose: string, facts: HolderFacts];
const over = (counts: { identity: number; person: number }, limit: number) =>
  counts.identity >= limit ? 'identity' : counts.person >= limit ? 'person' : undefined;
const holdersOf = (facts: AdmissionFacts): Whose[] => [['', facts], ...facts.actors.map((actor): Whose => ['actor\'s ', actor])];

/**
 * Seconds until a retry passes the rate. A refused request counts toward it too: a retry passes
 * once every window of the principal and its actors, this request in it, has fallen below the
 * limit (not only the window that refused now, which may clear first); 1 when none is near it.
 */
function rateClears(facts: AdmissionFacts, limit: number): number {
  const windows: RateWindow[] = holdersOf(facts).flatMap(([, holder]) => [holder.recent.identity, holder.recent.person]);
  return Math.max(...windows.map((window) => secondsUntilBelow(record(window, window.second), limit)));
}

/**
 * The request rate alone, per identity and per person of the principal and each actor: what
 * counts every request, refused ones too. Returns the refusal, or undefined.
 */
export function judgeRate(facts: AdmissionFacts, limits: Pick<BrokerConfig['limits'], 'requestsPerMinute'>): RateLimited | undefined {
  for (const [whose, holder] of holdersOf(facts)) {
    const rate = over({ identity: total(holder.recent.identity), person: total(holder.recent.person) }, limits.requestsPerMinute);
    if (rate) {
      return new RateLimited(
        `Too many credential requests: at most ${limits.requestsPerMinute} in any 60 seconds per ${whose}${rate}.`,
        rateClears(facts, limits.requestsPerMinute),
      );
    }
  }
  return undefined;
}

/**
 * The checks that turn on what the caller already holds or did, in order: the request rate
 * (abuse first), separation of duties, at once and across an object's lifecycle (refusals that
 * retrying will not change), the break-glass quota, then the live and pending limits. Each counts
 * per identity and per person; rates and limits count for every actor of a delegated request as
 * well, so an agent acting for many principals cannot exceed its own. Returns the refusal, or
 * undefined to admit.
 */
export function judgeAdmission(
  facts: AdmissionFacts,
  config: Pick<BrokerConfig, 'limits' | 'breakGlass'>,
  ask: Ask,
  policy: Policy,
  scopes: readonly string[],
): BrokerError | undefined {
  const { limits } = config;
  const seconds = (until: number | null | undefined, fallback: number) =>
    Math.max(1, Math.ceil(((until ?? ask.now + fallback) - ask.now) / 1000));
  const holders = holdersOf(facts);

  const rate = judgeRate(facts, limits);
  if (rate) return rate;

  if (facts.conflict) {
    const conflict = policy.separationConflict(scopes, [facts.conflict]);
    if (conflict) return separationError(conflict.rule, conflict.scopes, facts.conflict);
  }
  if (facts.duty) return dutyConflict(facts.duty, 'request');

  if (facts.breakGlass) {
    const max = config.breakGlass.maxPerIdentityPerDay;
    const who = facts.breakGlass.identity.count >= max ? 'identity' : facts.breakGlass.person.count >= max ? 'person' : undefined;
    if (who) {
      const oldest = facts.breakGlass[who].oldest;
      return new RateLimited(`Break-glass quota spent: ${max} grants per ${who} in any 24 hours.`, Math.max(seconds(oldest === null ? null : oldest + DAY_MS, DAY_MS), rateClears(facts, limits.requestsPerMinute)));
    }
  }

  // When the soonest grant of the holder at its limit ends; not before the rate lets a retry
  // through either, this refused request counted.
  const retry = (end: number | null) => Math.max(seconds(end, 60_000), rateClears(facts, limits.requestsPerMinute));
  for (const [whose, holder] of holders) {
    const live = over(holder.live, limits.liveGrants);
    if (live) {
      return new RateLimited(
        `Too many live grants: at most ${limits.liveGrants} held at once per ${whose}${live}; complete or revoke one, or wait for one to expire.`,
        retry(holder.soonestEnd ?? null),
      );
    }
    const pending = ask.pending ? over(holder.pending, limits.pendingRequests) : undefined;
    // A place frees when a request awaiting approval is decided (no telling when) or times out.
    if (pending) return new RateLimited(`Too many requests awaiting approval: at most ${limits.pendingRequests} at once per ${whose}${pending}.`, retry(holder.soonestPendingEnd ?? null));
  }
  return undefined;
}

const MAX_LISTED_SCOPES = 8;

/**
 * The `request.refused` event for a refusal, or none when this identity already had
 * `REFUSALS_RECORDED_PER_MINUTE` recorded this minute: then the refusal is only counted, and the
 * scheduler reports the count in one event once the minute is over.
 */
export function refusalEvent(
  identity: Principal,
  input: { taskId: string; scopes: readonly string[]; audience: string; breakGlass: boolean },
  error: BrokerError,
  facts: AdmissionFacts,
  /** A delegated request's actors, in the token's `act` shape: who asked for the principal. */
  act?: ActClaim,
): { event?: AuditEntry } {
  if (facts.refusalsRecorded >= REFUSALS_RECORDED_PER_MINUTE) return {};
  return {
    event: {
      type: 'request.refused',
      actor: { iss: identity.iss, sub: identity.sub },
      data: {
        problem: error.type,
        detail: capText(error.detail, 500),
        task_id: capText(input.taskId, 128),
        scopes: input.scopes.slice(0, MAX_LISTED_SCOPES),
        ...(input.scopes.length > MAX_LISTED_SCOPES ? { more_scopes: input.scopes.length - MAX_LISTED_SCOPES } : {}),
        audience: capText(input.audience, 256),
        break_glass: input.breakGlass,
        ...(act ? { act } : {}),
        count: 1,
      },
    },
  };
}

/** 403 `separation_of_duties`, naming the rule, the scopes and, when there is one, the live grant in the way. */
export function separationError(rule: string, scopes: readonly string[], against?: { requestId: string; byPerson: boolean }): SeparationOfDuties {
  const who = against?.byPerson ? 'one person (under any of their identities)' : 'one identity';
  const live = against ? ` with live request ${against.requestId}` : '';
  return new SeparationOfDuties(`Separation rule "${rule}": ${who} may not hold ${scopes.join(' and ')} at once${live}.`, {
    extensions: { rule, scopes: [...scopes], ...(against ? { conflicting_request_id: against.requestId } : {}) },
  });
}

