export { chainVerifier, verifyChain, verifyStoredChain } from './chain.js';
export type { ChainVerdict } from './chain.js';
export { createAuditService, eventView, EXPORT_PAGE_SIZE, issuanceView } from './service.js';
export type { AuditService, AuditServiceDeps, EventView, IssuanceView } from './service.js';
export { CHECKPOINT_TYPE, checkpointFromText, EMPTY_HEAD, MAX_CHECKPOINT_LENGTH, readCheckpoint, signCheckpoint, verdictView, verifyChainHolds } from './checkpoint.js';
export type { ChainHead, Checkpoint, CheckpointVerdict, VerdictView } from './checkpoint.js';
export { CheckpointRefused, EvidenceUnreadable, verifyDatabaseFile } from './offline.js';
export type { OfflineVerdict } from './offline.js';
