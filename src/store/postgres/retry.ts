import { sqlState } from './client.js';

/**
 * Conflicts PostgreSQL resolves by failing one of the transactions involved. Either way that
 * transaction was rolled back whole, so running it again is safe: a deadlock between replicas is
 * the broker's own doing and never the caller's 503, as long as a few tries settle it.
 */
export const CONFLICTS = { '40P01': 'deadlock', '40001': 'serialization_failure' } as const;
export type ConflictKind = (typeof CONFLICTS)[keyof typeof CONFLICTS];

/** Told of every conflict PostgreSQL reported, and whether the work was run again (else its callers got 503). */
export type OnConflict = (kind: ConflictKind, retried: boolean) => void;

/** Tries of one transaction at most: the first, and two more. */
export const MAX_ATTEMPTS = 3;

export const conflictOf = (error: unknown): ConflictKind | undefined => {
  const state = sqlState(error);
  return state !== undefined && state in CONFLICTS ? CONFLICTS[state as keyof typeof CONFLICTS] : undefined;
};

/**
 * Runs `transaction` again when PostgreSQL failed it with a deadlock or a serialization failure,
 * up to MAX_ATTEMPTS tries in all, after a short random pause (so the two sides of a deadlock do
 * not meet again in step). `transaction` must be a whole transaction whose work may run again:
 * the store's decisions are pure, and nothing of a failed try was committed.
 */
export async function retryConflicts<T>(transaction: () => Promise<T>, onConflict: OnConflict): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await transaction();
    } catch (error) {
      const kind = conflictOf(error);
      if (kind === undefined) throw error;
      const again = attempt < MAX_ATTEMPTS;
      onConflict(kind, again);
      if (!again) throw error;
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 5 * attempt));
    }
  }
}
