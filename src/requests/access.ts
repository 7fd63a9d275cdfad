import { sameIdentity, type Identity, type People } from '../identity/index.js';
import type { Policy } from '../policy/index.js';
import { jobKey, type ActorRecord, type ApprovalRecord, type RequestRecord } from '../store/index.js';

/**
 * The one test of who a party to a request is: the same identity and, when its issuer binds jobs
 * (`bindClaims`), the same job. Another run of the same CI job has the same subject but not the
 * same run: it is no party.
 */
const sameParty = (identity: Identity, party: Pick<ActorRecord, 'iss' | 'sub' | 'boundClaims'>): boolean =>
  sameIdentity(identity, party) && jobKey(identity.boundClaims) === jobKey(party.boundClaims);

/** The identity that asked for the request, in the job it asked from. */
export const isRequester = (identity: Identity, request: RequestRecord): boolean =>
  sameParty(identity, { ...request.requester, boundClaims: request.boundClaims });

/** This actor of a delegated request, in the job it acted from. */
export const isActor = (identity: Identity, actor: ActorRecord): boolean => sameParty(identity, actor);

/**
 * Who owns a request: the identity that asked, from the same job; to another run of that job the
 * request does not exist. A delegated request is also each of its actors' (in the job it acted
 * from): they may see, collect, complete and revoke it.
 */
export function isOwner(identity: Identity, request: RequestRecord): boolean {
  return isRequester(identity, request) || (request.act ?? []).some((actor) => isActor(identity, actor));
}

/**
 * Who may decide a request: a person holding the `approver` role and inside every requested
 * scope's `approvers`, under the running configuration. Workloads never approve. Only requests
 * with a human step have approvers: those that needed approval, and break-glass grants (which
 * need a review). A low-risk request has none, so an approver cannot see it; nor has a request
 * for a scope the configuration no longer has, whose approver rule went with it. Anyone else
 * cannot even see the request.
 */
export function mayApprove(policy: Policy, identity: Identity, request: RequestRecord): boolean {
  return (
    (request.approvalsRequired > 0 || request.breakGlass) &&
    identity.kind === 'person' &&
    identity.roles.has('approver') &&
    request.scopes.every((scope) => policy.scope(scope) !== undefined) &&
    policy.approverRules(request.scopes).every((matches) => matches(identity))
  );
}

/** What bars a decider: the requester, whoever started its job, or an actor, under any identity. */
export type SeparationBar = 'requester' | 'initiator' | 'actor';

/**
 * Why this identity is barred from deciding (or reviewing) a request it could otherwise decide:
 * it is the requester, or the same person as the requester or as whoever started the requesting
 * job, by person key under the running configuration, whichever issuer it comes from. Only ever
 * restricts.
 */
export function separationBar(identity: Pick<Identity, 'iss' | 'sub' | 'person'>, request: RequestRecord, people: People): SeparationBar | undefined {
  if (sameIdentity(identity, request.requester)) return 'requester';
  const samePerson = (key: string | null) => key !== null && identity.person !== undefined && people.personOf(key) === identity.person;
  if (samePerson(request.person)) return request.initiator !== null ? 'initiator' : 'requester';
  // An agent's principal and every actor count as requesters (CONTRACT section 1, "Agents").
  if ((request.act ?? []).some((actor) => sameIdentity(identity, actor) || samePerson(actor.person))) return 'actor';
  return undefined;
}

/**
 * How many distinct people approved: each approver's recorded key resolved through the running
 * configuration (an alias added since may make two approvers one person, or an approver the
 * person who started the job); an approver without a key is a person of its own. An approver the
 * running configuration bars from deciding counts for nothing. Judged at each decision, and again
 * when an approved request is collected.
 */
export const peopleApproving = (approvals: readonly ApprovalRecord[], request: RequestRecord, people: People): number =>
  new Set(
    approvals
      .filter((a) => a.decision === 'approve')
      .map((a) => ({ ...a.approver, person: a.person !== null ? people.personOf(a.person) : undefined }))
      .filter((approver) => separationBar(approver, request, people) === undefined)
      .map((approver) => (approver.person !== undefined ? `person ${approver.person}` : `identity ${approver.iss}\n${approver.sub}`)),
  ).size;

/**
 * How many approvals a request needs now: what it was made with, or more where a reload has
 * since raised a scope's `approvals`. Never fewer: its requester and approvers were told that
 * count, and a reload that lowers it is no approval.
 */
export const approvalsNeeded = (request: RequestRecord, policy: Pick<Policy, 'scope'>): number =>
  Math.max(request.approvalsRequired, ...request.scopes.map((name) => policy.scope(name)?.approvals ?? 0));

/** The refusal of a barred decider, in the words of the action refused. */
export function separationMessage(bar: SeparationBar, action: 'decide' | 'review'): string {
  if (bar === 'initiator') return `Separation of duties: the person who started the requesting job cannot ${action} its request.`;
  if (bar === 'actor') return `Separation of duties: an actor of the delegated request cannot ${action} it, under any of their identities.`;
  return `Separation of duties: the requester cannot ${action} its own request, under any of their identities.`;
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
