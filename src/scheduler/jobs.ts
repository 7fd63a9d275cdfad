import type { AuditLog } from '../audit/log.js';
import type { Notifier } from '../notify/webhooks.js';
import { toIso, type Clock } from '../shared/clock.js';
import type { RequestRecord, Store } from '../store/index.js';
import type { Keyring } from '../tokens/index.js';

export interface JobDeps {
  store: Store;
  audit: AuditLog;
  keyring: Keyring;
  notifier: Notifier;
  clock: Clock;
}

/** A job returns how many records it changed. */
export type Job = () => number | Promise<number>;

/**
 * CONTRACT section 6. Each job changes a record with a conditional UPDATE ... RETURNING and
 * writes one event per returned row in the same transaction: running a job twice, or in two
 * processes at once, changes each record once and records it once. Each job works from the
 * clock, not from what it last saw, so its first run after a restart catches up.
 */
export function createJobs(deps: JobDeps): Record<string, Job> {
  const { store, audit, keyring, notifier, clock } = deps;

  return {
    'expire-grants'() {
      const now = clock();
      return store.transaction(() => {
        const expired = store.requests.sweep('issued', 'expired', now);
        for (const grant of expired) {
          audit.append({
            type: 'grant.expired',
            requestId: grant.id,
            data: { jti: store.issuances.forRequest(grant.id)?.jti ?? null, scopes: grant.scopes, expired_at: toIso(grant.expiresAt) },
          });
        }
        return expired.length;
      });
    },

    'expire-requests'() {
      const now = clock();
      return store.transaction(() => {
        const expired = [
          ...store.requests.sweep('pending_approval', 'expired', now).map((r) => [r, 'pending_approval'] as const),
          ...store.requests.sweep('approved', 'expired', now).map((r) => [r, 'approved'] as const),
        ];
        for (const [request, previous] of expired) {
          audit.append({
            type: 'request.expired',
            requestId: request.id,
            data: { previous_status: previous, deadline: toIso(request.expiresAt) },
          });
        }
        return expired.length;
      });
    },

    'flag-overdue-reviews'() {
      const now = clock();
      const flagged = store.transaction(() =>
        store.reviews.flagOverdue(now).map((review) => {
          audit.append({ type: 'breakglass.review_overdue', requestId: review.requestId, data: { due_at: toIso(review.dueAt) } });
          return store.requests.get(review.requestId) as RequestRecord;
        }),
      );
      // After the commit: a webhook goes out only for a flag that was recorded.
      for (const request of flagged) notifier.notify('breakglass.review_overdue', request);
      return flagged.length;
    },

    async 'rotate-keys'() {
      const rotated = await keyring.rotateIfDue();
      return (rotated ? 1 : 0) + keyring.retireUnused().length;
    },
  };
}
