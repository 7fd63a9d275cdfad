export { verifyChain, verifyStoredChain } from './chain.js';
export type { ChainVerdict } from './chain.js';
export { createAuditService, ENTITLEMENTS_WINDOW_MS } from './service.js';
export type { AuditService, CustodyView, EntitlementView, EventView, IssuanceView } from './service.js';
export { checkpointFromText, EMPTY_HEAD, readCheckpoint, signCheckpoint, verdictView, verifyChainHolds } from './checkpoint.js';
export type { ChainHead, Checkpoint, CheckpointKeys, CheckpointTrust, VerdictView } from './checkpoint.js';
export { CheckpointRefused, EvidenceUnreadable, verifyDatabaseFile } from './offline.js';
export { NotAJwks, trustedKeysFromJwks } from './trusted-keys.js';
export type { TrustedKeys } from './trusted-keys.js';
