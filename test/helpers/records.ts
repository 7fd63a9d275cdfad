import type { AuditEventRecord } from '../../src/store/index.js';
import type { TestBroker } from './broker.js';

/** The whole audit chain as stored. */
export function allEvents(t: Pick<TestBroker, 'broker'>): Promise<AuditEventRecord[]> {
  return t.broker.store.events.after(0, 1_000_000);
}

export const eventsOf = async (t: Pick<TestBroker, 'broker'>, requestId: string) =>
  (await allEvents(t)).filter((event) => event.requestId === requestId);
