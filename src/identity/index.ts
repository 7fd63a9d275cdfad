export { devIssuerJwks, loadOrCreateDevKey, mintDevIdentityToken } from './dev-issuer.js';
export { KeySourceUnavailable, loadTrustedIssuers } from './issuers.js';
export type { IssuerOptions, TrustedIssuer } from './issuers.js';
export { compileGlob, compileMatch } from './match.js';
export type { IdentityMatcher, Matchable } from './match.js';
export { compileRoles, requireRole } from './roles.js';
export type { RoleResolver } from './roles.js';
export { createIdentityVerifier, MAX_IDENTITY_TOKEN_BYTES, sameIdentity } from './verifier.js';
export type { Identity, IdentityVerifier } from './verifier.js';
