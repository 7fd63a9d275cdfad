import { toIso, type Clock } from '../shared/clock.js';
import type { Store } from '../store/index.js';
import type { AuditEventRecord, Principal } from '../store/records.js';
import { canonicalEvent, chainHash, GENESIS_HASH } from './chain.js';

/** CONTRACT section 5 event types, and the broker's own additions. */
export type AuditEventType =
  | 'config.loaded'
  | 'request.created'
  | 'request.refused'
  | 'request.denied'
  | 'request.approved'
  | 'request.expired'
  | 'request.revoked'
  | 'approval.recorded'
  | 'token.issued'
  | 'token.revoked'
  | 'grant.expired'
  | 'breakglass.used'
  | 'breakglass.reviewed'
  | 'breakglass.review_overdue'
  | 'key.rotated'
  | 'key.retired'
  | 'notify.failed';

export interface AuditEntry {
  type: AuditEventType;
  /** Who acted; absent when the broker itself did (the scheduler, start-up). */
  actor?: Principal | null;
  requestId?: string | null;
  /** Never a token, never a secret. */
  data?: Record<string, unknown>;
}

export interface AuditLog {
  /**
   * Appends one event to the chain. Call it inside the `store.transaction` that makes the change
   * it records: the event and the change commit together or not at all, and the write lock held
   * by that transaction keeps the chain a single line across processes.
   */
  append(entry: AuditEntry): AuditEventRecord;
}

export function createAuditLog(store: Pick<Store, 'events' | 'db'>, clock: Clock): AuditLog {
  return {
    append(entry) {
      if (!store.db.inTransaction) throw new Error('audit events are appended inside the transaction of their change');
      const head = store.events.head();
      const event = {
        seq: (head?.seq ?? 0) + 1,
        at: toIso(clock()),
        type: entry.type,
        actor: entry.actor ? { iss: entry.actor.iss, sub: entry.actor.sub } : null,
        requestId: entry.requestId ?? null,
        data: entry.data ?? {},
      };
      const prevHash = head?.hash ?? GENESIS_HASH;
      const record = { ...event, prevHash, hash: chainHash(prevHash, canonicalEvent(event)) };
      store.events.insert(record);
      return record;
    },
  };
}
