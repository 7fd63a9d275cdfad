export { createApprovalService } from './service.js';
export type { ApprovalService, DecisionInput } from './service.js';
