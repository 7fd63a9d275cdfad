/**
 * The DPoP proofs this process has accepted, each remembered until its window ends (after that
 * the proof is refused as stale anyway). Per process: resource servers running as several
 * processes or replicas each keep their own, so a proof replayed to another one within its
 * window goes unseen there. Bounded: full of proofs still in their window, it refuses new ones
 * (fail closed) rather than forget one that could then be replayed.
 */
export interface ProofReplayCache {
  /** Records a proof: 'fresh' the first time, 'replayed' while it is remembered, 'full' when there is no room. */
  record(key: string, rememberUntil: number): 'fresh' | 'replayed' | 'full';
}

export function createProofReplayCache(maxEntries: number, now: () => number): ProofReplayCache {
  // Insertion order is close to expiry order (each window is as long), so expired entries
  // gather at the front, where each record looks first.
  const seen = new Map<string, number>();
  const forgetExpired = (all: boolean) => {
    const at = now();
    for (const [key, until] of seen) {
      if (until < at) seen.delete(key);
      else if (!all) break;
    }
  };

  return {
    record(key, rememberUntil) {
      forgetExpired(false);
      const until = seen.get(key);
      if (until !== undefined && until >= now()) return 'replayed';
      if (seen.size >= maxEntries) forgetExpired(true);
      if (seen.size >= maxEntries) return 'full';
      seen.delete(key);
      seen.set(key, rememberUntil);
      return 'fresh';
    },
  };
}
