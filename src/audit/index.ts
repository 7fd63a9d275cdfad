export { canonicalEvent, canonicalParts, chainHash, chainVerifier, GENESIS_HASH, verifyChain, verifyStoredChain } from './chain.js';
export type { ChainVerdict } from './chain.js';
export { createAuditService, eventView, EXPORT_PAGE_SIZE, issuanceView } from './service.js';
export type { AuditService, EventView, IssuanceView } from './service.js';
