export { actClaim, checkMayAct, compileDelegation } from './rules.js';
export type { Allowance, Delegation } from './rules.js';
