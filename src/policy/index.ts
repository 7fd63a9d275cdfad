export { compilePolicy } from './policy.js';
export type { CredentialAsk, LiveGrant, Policy, PolicyDecision, SeparationConflict } from './policy.js';
