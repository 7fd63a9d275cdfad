export { createApprovalService } from './service.js';
export type { ApprovalService } from './service.js';
