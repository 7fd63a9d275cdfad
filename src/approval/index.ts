export { createApprovalService, LISTING_SCAN_BUDGET } from './service.js';
export type { ApprovalService } from './service.js';
