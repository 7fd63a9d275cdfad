export { actorChain } from './claims.js';
export type { ActClaim, Actor, BrokerTokenClaims } from './claims.js';
export { BrokerTokenError } from './errors.js';
export type { BrokerTokenErrorCode } from './errors.js';
export { createBrokerVerifier, verifyBrokerToken } from './verifier.js';
export type {
  BrokerVerifier,
  BrokerVerifierOptions,
  DpopOptions,
  PresentedRequest,
  RequestRequirements,
  RevocationCheck,
  VerifyRequirements,
} from './verifier.js';
