export { isOwner, mayApprove, maySee, separationBar, separationMessage } from './access.js';
export type { SeparationBar } from './access.js';
export { requestDigest } from './digest.js';
export type { DigestInput } from './digest.js';
export { effectiveStatus, issuedView, pendingView, requestView, reviewView } from './view.js';
export type { IssuedView, PendingView, RequestView } from './view.js';
