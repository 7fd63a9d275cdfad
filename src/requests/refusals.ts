import { SeparationOfDuties, type BrokerError } from '../shared/errors.js';
import { truncate } from '../shared/well-formed.js';
import type { Principal, Store } from '../store/index.js';

/** Refusals of one identity recorded one by one in a minute; the rest are counted into one event. */
export const REFUSALS_RECORDED_PER_MINUTE = 5;

/** Stored inputs of a refusal are capped: a refused caller must not be able to write much. */
export const capText = (text: string, max: number) => truncate(text, max + 1, '…');

/**
 * Records in the audit chain that a decider was refused a decision on a request because of who
 * they are (the requester approving their own request, an actor of it reviewing it, one who took
 * part in another step of its object): an insider's attempt is what an auditor looks for. Bounded
 * as refused requests are: the first few of a decider in a minute one by one, the rest counted
 * into the scheduler's one event for that minute.
 */
function recordRefusedDecision(
  store: Pick<Store, 'refuse'>,
  decider: Principal,
  requestId: string,
  action: 'approve' | 'deny' | 'review',
  refusal: BrokerError,
  now: number,
): Promise<void> {
  return store.refuse({ iss: decider.iss, sub: decider.sub }, now, (recordedThisMinute) =>
    recordedThisMinute >= REFUSALS_RECORDED_PER_MINUTE
      ? undefined
      : {
          type: 'decision.refused',
          actor: { iss: decider.iss, sub: decider.sub },
          requestId,
          data: { action, problem: refusal.type, detail: capText(refusal.detail, 500), count: 1 },
        },
  );
}

/**
 * Runs a decision and, when it is refused for who decides (403 `separation_of_duties`), records
 * the refusal before passing it on. Other refusals (a stale digest, a request already decided,
 * one the decider may not see) are the caller's mistakes or race, and are not recorded.
 */
export async function refusalsRecorded<T>(
  store: Pick<Store, 'refuse'>,
  decider: Principal,
  requestId: string,
  action: 'approve' | 'deny' | 'review',
  now: number,
  decision: () => Promise<T>,
): Promise<T> {
  try {
    return await decision();
  } catch (error) {
    if (error instanceof SeparationOfDuties) await recordRefusedDecision(store, decider, requestId, action, error, now);
    throw error;
  }
}
