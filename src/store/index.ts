export { MIGRATIONS_DIR, migrate, openDatabase } from './database.js';
export type { Db } from './database.js';
export { createStore, openStore } from './store.js';
export type { Store, TransitionFields } from './store.js';
export { LIVE_STATUSES } from './records.js';
export type {
  ApprovalRecord,
  AuditEventRecord,
  BreakGlassReviewRecord,
  Decision,
  EventFilter,
  GrantStatus,
  IssuanceAuditRecord,
  IssuanceFilter,
  IssuanceRecord,
  Principal,
  RequestRecord,
  RequestStatus,
  ReviewOutcome,
  SigningKeyRecord,
} from './records.js';
