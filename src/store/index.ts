export type {
  Admission,
  ChangeFacts,
  CustodyRecord,
  DutyFinding,
  DutyProbe,
  AdmissionFacts,
  AdmissionProbe,
  Holder,
  HolderFacts,
  ProofUse,
  RequestChange,
  RequestState,
  Store,
  TransitionFields,
} from './contract.js';
export type {
  ActorRecord,
  ApprovalRecord,
  AuditEntry,
  AuditEventRecord,
  AuditEventType,
  BreakGlassReviewRecord,
  Decision,
  EntitlementUse,
  EventFilter,
  GrantKey,
  GrantStatus,
  IssuanceAuditRecord,
  IssuancePosition,
  IssuanceFilter,
  IssuanceRecord,
  NewIssuance,
  Principal,
  RequestRecord,
  RequestStatus,
  ReviewOutcome,
  SigningKeyRecord,
} from './records.js';
export { LIVE_STATUSES } from './records.js';
export { isLive, jobKey, SchemaTooNew } from './shared.js';
export { openStore, type StoreOptions } from './open.js';
export type { ConflictKind, OnConflict } from './postgres/retry.js';
export { openSqliteReadOnly } from './sqlite/index.js';
