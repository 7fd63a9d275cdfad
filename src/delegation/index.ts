export { actClaim, checkMayAct, compileDelegation } from './rules.js';
export type { ActClaim, Allowance, Delegation } from './rules.js';
