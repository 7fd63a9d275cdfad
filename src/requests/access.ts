import { sameIdentity, type Identity } from '../identity/index.js';
import type { Policy } from '../policy/index.js';
import { jobKey, type RequestRecord } from '../store/index.js';

/**
 * Who owns a request: the identity that asked, and when its issuer binds jobs (`bindClaims`),
 * only from the same job. Another run of the same CI job has the same subject but not the same
 * run: to it the request does not exist.
 */
export function isOwner(identity: Identity, request: RequestRecord): boolean {
  return sameIdentity(identity, request.requester) && jobKey(identity.boundClaims) === jobKey(request.boundClaims);
}

/**
 * Who may decide a request: a person holding the `approver` role and inside every requested
 * scope's `approvers`. Workloads never approve. Only requests with a human step have approvers:
 * those that needed approval, and break-glass grants (which need a review). A low-risk request
 * has none, so an approver cannot see it. Anyone else cannot even see the request.
 */
export function mayApprove(policy: Policy, identity: Identity, request: RequestRecord): boolean {
  return (
    (request.approvalsRequired > 0 || request.breakGlass) &&
    identity.kind === 'person' &&
    identity.roles.has('approver') &&
    policy.approverRules(request.scopes).every((matches) => matches(identity))
  );
}

/**
 * Why this identity is barred from deciding (or reviewing) a request it could otherwise decide:
 * it is the requester, or the same person as the requester or as whoever started the requesting
 * job, by person key, whichever issuer it comes from. Only ever restricts.
 */
export function separationBar(identity: Identity, request: RequestRecord): string | undefined {
  if (sameIdentity(identity, request.requester)) return 'the requester cannot decide its own request';
  if (request.person !== null && identity.person === request.person) {
    return request.initiator !== null
      ? 'the person who started the requesting job cannot decide its request'
      : 'the requester cannot decide its own request, under another identity either';
  }
  return undefined;
}

/** Who may see a request: its owner, its possible approvers, auditors and admins. */
export function maySee(policy: Policy, identity: Identity, request: RequestRecord): boolean {
  return (
    isOwner(identity, request) ||
    identity.roles.has('auditor') ||
    identity.roles.has('admin') ||
    mayApprove(policy, identity, request)
  );
}
