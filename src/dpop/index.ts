export { singleDpopHeader, singleDpopProof } from './header.js';
export { signDpopProof } from './sign.js';
export type { DpopProofRequest, DpopSigningKey } from './sign.js';
export { dpopTargetUri } from './target-uri.js';
export { DPOP_SIGNING_ALGORITHMS, verifyDpopProof } from './verify.js';
export type { ExpectedDpopProof, VerifiedDpopProof } from './verify.js';
