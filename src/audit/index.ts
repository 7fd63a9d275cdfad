export { canonicalEvent, chainHash, GENESIS_HASH, verifyChain } from './chain.js';
export type { ChainVerdict } from './chain.js';
export { createAuditLog } from './log.js';
export type { AuditEntry, AuditEventType, AuditLog } from './log.js';
