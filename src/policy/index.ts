export { compilePolicy } from './policy.js';
export type { CredentialAsk, Policy, PolicyDecision } from './policy.js';
