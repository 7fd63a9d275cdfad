export { approvalsNeeded, isActor, isOwner, isRequester, mayApprove, maySee, peopleApproving, separationBar, separationMessage } from './access.js';
export { requestDigest } from './digest.js';
export { effectiveStatus, issuedView, pendingView, requestView } from './view.js';
export type { IssuedView, PendingView, RequestView } from './view.js';
export { actorHolders, holderOf, requestParticipants } from './holder.js';
export { revokeWithLine } from './revocation.js';
export { capText, refusalsRecorded, REFUSALS_RECORDED_PER_MINUTE } from './refusals.js';
