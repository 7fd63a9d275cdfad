import { decodeProtectedHeader } from 'jose';
import { signCheckpoint } from '../audit/index.js';
import type { Notifier } from '../notify/index.js';
import { toIso, type Clock } from '../shared/clock.js';
import type { RequestRecord, Store } from '../store/index.js';
import type { Keyring } from '../tokens/index.js';

export interface JobDeps {
  store: Store;
  keyring: Keyring;
  notifier: Notifier;
  clock: Clock;
  /** The broker's own `iss`, for checkpoints. */
  issuer: string;
  /** `audit.checkpointEvery` in ms, as the configuration now says. */
  checkpointEvery: () => number;
  /** `scheduler.interval` in ms: how far apart the runs of a job are (0: run by hand). */
  intervalMs?: number;
  /** Records per store operation: no job holds the write lock for long however much is due. */
  batchSize?: number;
}

/**
 * A job returns how many records it changed. Once `stopping` is aborted it ends after the batch
 * in hand: a broker told to stop while it catches up on days of backlog stops within a batch.
 */
export type Job = (stopping?: AbortSignal) => number | Promise<number>;

export const DEFAULT_BATCH_SIZE = 500;
/**
 * How long a DPoP proof's jti is kept past its window: far beyond the longest a store operation
 * may wait (PostgreSQL's lock and statement timeouts, three tries), so that none records a proof
 * after its jti was forgotten.
 */
export const PROOF_MEMORY_MARGIN_MS = 5 * 60_000;

/**
 * CONTRACT section 6. Each job moves due records in batches, each batch one store operation that
 * changes a record only from the state the job expects and writes one event per record changed:
 * running a job twice, or in two processes or replicas at once, changes each record once and
 * records it once. Each job works from the clock, not from what it last saw, so its first run
 * after a restart catches up.
 */
export function createJobs(deps: JobDeps): Record<string, Job> {
  const { store, keyring, notifier, clock } = deps;
  const batchSize = deps.batchSize ?? DEFAULT_BATCH_SIZE;

  /**
   * Runs `batch` until it returns fewer than a full batch, or the broker stops; other requests'
   * writes interleave between batches.
   */
  const inBatches = async <T>(stopping: AbortSignal | undefined, batch: (limit: number) => Promise<T[]>, each: (item: T) => void = () => {}) => {
    let total = 0;
    for (;;) {
      const done = await batch(batchSize);
      done.forEach(each);
      total += done.length;
      if (done.length < batchSize || stopping?.aborted) return total;
    }
  };

  return {
    'expire-grants': (stopping) =>
      inBatches(stopping, (limit) =>
        store.sweep.grants(clock(), limit, (grant, jti) => ({
          type: 'grant.expired',
          requestId: grant.id,
          data: { jti, scopes: grant.scopes, expired_at: toIso(grant.expiresAt) },
        })),
      ),

    'expire-requests': (stopping) =>
      inBatches(stopping, (limit) =>
        store.sweep.requests(clock(), limit, (request) => ({
          type: 'request.expired',
          requestId: request.id,
          data: { previous_status: request.status, deadline: toIso(request.expiresAt) },
        })),
      ),

    'flag-overdue-reviews': (stopping) =>
      inBatches(
        stopping,
        (limit) =>
          store.sweep.overdueReviews(clock(), limit, (review) => ({
            type: 'breakglass.review_overdue',
            requestId: review.requestId,
            data: { due_at: toIso(review.dueAt) },
          })),
        // After the commit: a webhook goes out only for a flag that was recorded.
        (request: RequestRecord) => notifier.notify('breakglass.review_overdue', request),
      ),

    'report-refusals': async (stopping) => {
      let total = 0;
      for (;;) {
        const { reported, more } = await store.sweep.refusals(clock(), batchSize, (tally) => ({
          type: 'request.refused',
          actor: tally.actor,
          data: { count: tally.count, aggregated: true, minute: toIso(tally.minuteStart) },
        }));
        total += reported;
        // Until nothing is due: after a long stop, idle callers' windows are many more than one batch.
        if (!more || stopping?.aborted) return total;
      }
    },

    /**
     * DPoP proofs past their window are forgotten: their jtis would be refused as stale anyway.
     * Not at once: a proof checked inside its window is recorded by its request's store
     * operation, which may wait on other operations' locks first (seconds at most); forgotten
     * meanwhile, its jti would be taken as new, and a replay let through.
     */
    'forget-dpop-proofs': async (stopping) => {
      let total = 0;
      for (;;) {
        const forgotten = await store.sweep.proofs(clock() - PROOF_MEMORY_MARGIN_MS, batchSize);
        total += forgotten;
        if (forgotten < batchSize || stopping?.aborted) return total;
      }
    },

    /**
     * A signed checkpoint of the chain head every `audit.checkpointEvery`, recorded as an
     * `audit.checkpoint` event and sent to webhooks, so the heads live off the broker's host too.
     * Judged from the last checkpoint event, so a restart catches up and several processes sign
     * one between them; nothing is signed while nothing but the last checkpoint was appended.
     * Due at the run nearest a period after the last: that one was recorded a moment after its
     * own run, so the run a whole period later finds a little less than a period passed, and
     * skipping it would sign a period plus an interval apart (two hours for an interval of 1h).
     * A last one more than a period ahead of this clock was signed by a clock since stepped back
     * (no skew between replicas is that large): waiting for this clock to pass it would sign none
     * for as long as the step.
     */
    async 'sign-checkpoint'() {
      const last = await store.events.latest('audit.checkpoint');
      const every = deps.checkpointEvery();
      const since = last ? clock() - Date.parse(last.at) : Number.POSITIVE_INFINITY;
      if (since + (deps.intervalMs ?? 0) / 2 < every && since > -every) return 0;
      const seen = await store.events.head();
      if (!seen || seen.seq === last?.seq) return 0;
      // The JWS is readable in its event from that event's COMMIT, before its sync: the head it
      // names must be durable by then. This process syncs its own batches in order, but another
      // process on the same SQLite file may still be syncing the batch read here.
      const head = await store.events.durableHead();
      if (!head) return 0; // never: the chain held `seen`
      const signed = await signCheckpoint(keyring, deps.issuer, head, clock());
      const { kid } = decodeProtectedHeader(signed.checkpoint);
      const recorded = await store.appendIfLatest(
        { type: 'audit.checkpoint', data: { seq: signed.seq, hash: signed.hash, kid, checkpoint: signed.checkpoint } },
        last?.seq ?? 0,
      );
      if (!recorded) return 0; // another process signed one first
      notifier.checkpoint(signed);
      return 1;
    },

    async 'rotate-keys'() {
      await keyring.refresh();
      const rotated = await keyring.rotateIfDue();
      return (rotated ? 1 : 0) + (await keyring.retireUnused()).length;
    },
  };
}
