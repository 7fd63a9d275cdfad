export { createCredentialService } from './service.js';
export type { CredentialInput, CredentialService, RequestOutcome } from './service.js';
