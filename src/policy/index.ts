export { compilePolicy } from './policy.js';
export type { CapSource, CredentialAsk, Grant, Policy, PolicyDecision, PolicyExplanation, PolicyStand, ScopeExplanation } from './policy.js';
