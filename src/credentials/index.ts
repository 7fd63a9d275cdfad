export { createCredentialService } from './service.js';
export type { CredentialService } from './service.js';
export type { CredentialServiceDeps } from './grant.js';
export type { CredentialInput, RequestOutcome } from './requesting.js';
export type { ChildInput } from './delegating.js';
export type { PresentedProof } from './binding.js';
export { planDelegated, planPlain } from './planning.js';
export type { PlanningRules } from './planning.js';
export type { Binding } from './binding.js';
