export { compilePolicy } from './policy.js';
export type { Policy } from './policy.js';
