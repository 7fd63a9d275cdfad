export { createApprovalService, LISTING_SCAN_BUDGET } from './service.js';
export type { ApprovalService, DecisionInput } from './service.js';
