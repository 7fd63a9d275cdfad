import { dutyConflict, dutyProbe, type DutyStep } from '../duties/index.js';
import { sameIdentity, type Identity, type People } from '../identity/index.js';
import type { Notifier } from '../notify/index.js';
import { quietObserver, type BrokerObserver } from '../observability/observer.js';
import { approvalsNeeded, effectiveStatus, holderOf, mayApprove, peopleApproving, refusalsRecorded, requestView, separationBar, separationMessage, type RequestView } from '../requests/index.js';
import type { Settings } from '../settings/index.js';
import type { Clock } from '../shared/clock.js';
import { decodeCursor, LISTING_SCAN_BUDGET, scanPage } from '../shared/cursor.js';
import { BrokerError, Conflict, NotFound, SeparationOfDuties } from '../shared/errors.js';
import type { ApprovalRecord, Decision, RequestRecord, RequestState, Store } from '../store/index.js';

export interface DecisionInput {
  decision: Decision;
  reason: string;
  /** The request's digest as the approver saw it. */
  digest: string;
}

export interface ApprovalServiceDeps {
  settings: (caller?: Identity) => Settings;
  store: Store;
  notifier: Notifier;
  clock: Clock;
  /** Told of every recorded decision. */
  observer?: Pick<BrokerObserver, 'decisionRecorded'>;
}

export type ApprovalService = ReturnType<typeof createApprovalService>;

/**
 * Whether this approver, or this person under another identity, has decided the request already:
 * each earlier decider's recorded key resolved through the running configuration.
 */
const decidedBy = (identity: Identity, approvals: readonly ApprovalRecord[], people: People) =>
  approvals.some((a) => sameIdentity(a.approver, identity) || (a.person !== null && people.personOf(a.person) === identity.person));

/** The approver's side: what one may decide, and deciding it. */
export function createApprovalService(deps: ApprovalServiceDeps) {
  const { settings, store, notifier, clock } = deps;

  return {
    /**
     * Records one approver's decision, judged on the request as it is under the store's lock, in
     * this order: the caller may approve every scope (else it cannot see the request: 404, so a
     * 403 never confirms to an outsider that a request exists); the caller is not the requester,
     * nor the person who asked or started its job, under any identity (403); the digest is the
     * request's (409); the request is still pending and this person has not decided it (409);
     * to approve, the caller took part in no other step of the request's objects (403, duties).
     * One deny denies; `approvals_required` approvals by distinct people approve.
     */
    async decide(identity: Identity, id: string, input: DecisionInput): Promise<RequestView> {
      const { config, policy, people, duties } = settings(identity);
      const now = clock();
      // An approver takes part in the steps the request takes part in, under the running duties;
      // a request's scopes and objects never change, so they are read before the operation.
      const known = await store.requests.get(id);
      let steps: DutyStep[] = [];
      let misfit: BrokerError | undefined;
      try {
        steps = known ? duties.stepsOf(known.scopes, known.authorizationDetails ?? []) : [];
      } catch (error) {
        if (!(error instanceof BrokerError)) throw error;
        misfit = error;
      }
      const takesPart = input.decision === 'approve' ? dutyProbe(steps, [holderOf(identity, identity.personKey, people)], now) : undefined;
      type Decided = { after: RequestState; outcome: 'request.approved' | 'request.denied' | undefined };
      const { after, outcome } = await refusalsRecorded(store, identity, id, input.decision, now, () => store.change<Decided>(id, (state, facts) => {
        if (!state || !mayApprove(policy, identity, state.request)) throw new NotFound(`No request ${id} that you may see.`);
        const { request, approvals } = state;
        const bar = separationBar(identity, request, people);
        if (bar) throw new SeparationOfDuties(separationMessage(bar, 'decide'));
        if (input.digest !== request.digest) {
          throw new Conflict('The digest does not match this request: review it again and decide on what it is now.', {
            extensions: { digest: request.digest },
          });
        }
        const status = effectiveStatus(request, now);
        if (status !== 'pending_approval') throw new Conflict(`The request is ${status}, no longer pending.`);
        if (decidedBy(identity, approvals, people)) throw new Conflict('You have already decided this request.');
        // A denial is always allowed; an approval makes the approver take part in the request's steps.
        if (input.decision === 'approve') {
          if (misfit) throw new Conflict(`The request no longer fits the running duties and cannot be approved: ${misfit.detail}`);
          if (facts.duty) throw dutyConflict(facts.duty, 'approval');
        }

        const approval: ApprovalRecord = {
          requestId: id,
          approver: { iss: identity.iss, sub: identity.sub },
          person: identity.personKey ?? null,
          decision: input.decision,
          reason: input.reason,
          digest: input.digest,
          at: now,
        };
        const recorded = {
          type: 'approval.recorded' as const,
          actor: identity,
          requestId: id,
          data: { decision: input.decision, reason: input.reason, digest: input.digest },
        };
        const withApproval = (next: RequestRecord): RequestState => ({ ...state, request: next, approvals: [...approvals, approval] });

        if (input.decision === 'deny') {
          const fields = { decidedAt: now, endedAt: now };
          return {
            transition: { from: ['pending_approval'], to: 'denied', fields },
            approval,
            events: [recorded, { type: 'request.denied', actor: identity, requestId: id, data: { reason: input.reason } }],
            result: { after: withApproval({ ...request, status: 'denied', ...fields }), outcome: 'request.denied' },
          };
        }
        // Approvals count distinct people under the running configuration, this one included,
        // against the count it asks now; a raised count is kept on the request, which views show.
        const approvers = peopleApproving([...approvals, approval], request, people);
        const needed = approvalsNeeded(request, policy);
        const raised = needed > request.approvalsRequired ? { approvalsRequired: needed } : undefined;
        if (approvers < needed) {
          return {
            ...(raised ? { transition: { from: ['pending_approval'] as const, to: 'pending_approval' as const, fields: raised } } : {}),
            approval,
            participants: takesPart,
            events: [recorded],
            result: { after: withApproval({ ...request, ...raised }), outcome: undefined },
          };
        }
        const fields = { decidedAt: now, expiresAt: now + config.approval.collectWithin, ...raised };
        return {
          transition: { from: ['pending_approval'], to: 'approved', fields },
          approval,
          participants: takesPart,
          events: [recorded, { type: 'request.approved', actor: identity, requestId: id, data: { approvals: approvers } }],
          result: { after: withApproval({ ...request, status: 'approved', ...fields }), outcome: 'request.approved' },
        };
      }, { duties: takesPart }));
      (deps.observer ?? quietObserver).decisionRecorded(input.decision);
      if (outcome) notifier.notify(outcome, after.request);
      return requestView(after, now);
    },

    /**
     * Pending requests this caller may decide: never its own, nor those of jobs it started, nor
     * those it has already decided (a second decision would be refused). Each page reads a
     * bounded number of rows.
     */
    async pending(identity: Identity, cursor: string | undefined, limit: number): Promise<{ items: RequestView[]; next_cursor: string | null }> {
      const { policy, people } = settings(identity);
      if (identity.kind !== 'person' || !identity.roles.has('approver')) return { items: [], next_cursor: null };
      const now = clock();
      return scanPage({
        read: (after, count) => store.requests.pending(now, after && { createdAt: after[0], id: after[1] }, count),
        key: (request) => [request.createdAt, request.id] as const,
        async select(requests) {
          const decidable = requests.filter((r) => mayApprove(policy, identity, r) && separationBar(identity, r, people) === undefined);
          const states = new Map((await store.requests.states(decidable)).map((state) => [state.request.id, state]));
          return requests.map((request) => {
            const state = states.get(request.id);
            return state && !decidedBy(identity, state.approvals, people) ? requestView(state, now) : undefined;
          });
        },
        after: decodeCursor(cursor, ['number', 'string'] as const),
        limit,
        budget: LISTING_SCAN_BUDGET,
      });
    },
  };
}
