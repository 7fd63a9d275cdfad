import { sameIdentity, type Identity } from '../identity/index.js';
import type { Policy } from '../policy/index.js';
import type { RequestRecord } from '../store/index.js';

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
 * Why this identity is barred from deciding a request it could otherwise decide: it is the
 * requester, or the person who started the requesting job (or may be: a person whose token has
 * no username cannot decide a request that names an initiator). Usernames compare without regard
 * to case or Unicode form, so that `Alice` cannot approve what `alice` started.
 */
export function separationBar(identity: Identity, request: RequestRecord): string | undefined {
  if (sameIdentity(identity, request.requester)) return 'the requester cannot decide its own request';
  if (request.initiator !== null) {
    // Fail closed: without a username the broker cannot tell this person from the initiator,
    // and leaving the claim out of a token must not be a way around the rule.
    if (identity.username === undefined) {
      return 'the request names the person who started its job, and your token carries no username to compare';
    }
    if (sameUsername(request.initiator, identity.username)) {
      return 'the person who started the requesting job cannot decide its request';
    }
  }
  return undefined;
}

const sameUsername = (a: string, b: string): boolean =>
  a.normalize('NFKC').toLowerCase() === b.normalize('NFKC').toLowerCase();

/** Who may see a request: its requester, its possible approvers, auditors and admins. */
export function maySee(policy: Policy, identity: Identity, request: RequestRecord): boolean {
  return (
    sameIdentity(identity, request.requester) ||
    identity.roles.has('auditor') ||
    identity.roles.has('admin') ||
    mayApprove(policy, identity, request)
  );
}
