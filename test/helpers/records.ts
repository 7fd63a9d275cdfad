import type { AuditEventRecord } from '../../src/store/index.js';
import type { TestBroker } from './broker.js';

/** The whole audit chain as stored. */
export function allEvents(t: Pick<TestBroker, 'broker'>): AuditEventRecord[] {
  return t.broker.store.events.after(0, 1_000_000);
}

export const eventsOf = (t: Pick<TestBroker, 'broker'>, requestId: string) =>
  allEvents(t).filter((event) => event.requestId === requestId);
