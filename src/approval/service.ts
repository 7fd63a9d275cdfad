import type { AuditLog } from '../audit/log.js';
import type { BrokerConfig } from '../config/index.js';
import { effectiveStatus, mayApprove, requestDetails, requestView, separationBar, type RequestView } from '../requests/index.js';
import { sameIdentity, type Identity } from '../identity/index.js';
import type { Notifier } from '../notify/webhooks.js';
import type { Policy } from '../policy/index.js';
import type { Clock } from '../shared/clock.js';
import { decodeCursor, filteredPage } from '../shared/cursor.js';
import { Conflict, NotFound, SeparationOfDuties } from '../shared/errors.js';
import type { Decision, RequestRecord, Store } from '../store/index.js';

export interface DecisionInput {
  decision: Decision;
  reason: string;
  /** The request's digest as the approver saw it. */
  digest: string;
}

export interface ApprovalServiceDeps {
  config: Pick<BrokerConfig, 'approval'>;
  policy: Policy;
  store: Store;
  audit: AuditLog;
  notifier: Notifier;
  clock: Clock;
}

export type ApprovalService = ReturnType<typeof createApprovalService>;

/** The approver's side: what one may decide, and deciding it. */
export function createApprovalService(deps: ApprovalServiceDeps) {
  const { config, policy, store, audit, notifier, clock } = deps;

  return {
    /**
     * Records one approver's decision. Checked in this order, all under the write lock: the
     * request exists; the caller is not its requester nor the person who started its job (403);
     * the caller may approve every scope (else it cannot see the request: 404); the digest is
     * the request's (409); the request is still pending and the caller has not decided it (409).
     * One deny denies; `approvals_required` distinct approvals approve.
     */
    decide(identity: Identity, id: string, input: DecisionInput): RequestView {
      const now = clock();
      const { request, outcome } = store.transaction(() => {
        const request = store.requests.get(id);
        if (!request) throw new NotFound(`No request ${id} that you may see.`);
        // Who may not approve it cannot see it (404) and learns nothing more: the 403 comes second.
        if (!mayApprove(policy, identity, request)) throw new NotFound(`No request ${id} that you may see.`);
        const bar = separationBar(identity, request);
        if (bar) throw new SeparationOfDuties(`Separation of duties: ${bar}.`);
        if (input.digest !== request.digest) {
          throw new Conflict('The digest does not match this request: review it again and decide on what it is now.', {
            extensions: { digest: request.digest },
          });
        }
        const status = effectiveStatus(request, now);
        if (status !== 'pending_approval') throw new Conflict(`The request is ${status}, no longer pending.`);
        const approvals = store.approvals.list(id);
        if (approvals.some((a) => sameIdentity(a.approver, identity))) {
          throw new Conflict('You have already decided this request.');
        }

        store.approvals.insert({ requestId: id, approver: identity, decision: input.decision, reason: input.reason, digest: input.digest, at: now });
        audit.append({
          type: 'approval.recorded',
          actor: identity,
          requestId: id,
          data: { decision: input.decision, reason: input.reason, digest: input.digest },
        });

        if (input.decision === 'deny') {
          const denied = store.requests.transition(id, ['pending_approval'], 'denied', { decidedAt: now, endedAt: now }) as RequestRecord;
          audit.append({ type: 'request.denied', actor: identity, requestId: id, data: { reason: input.reason } });
          return { request: denied, outcome: 'request.denied' as const };
        }
        const approvers = approvals.filter((a) => a.decision === 'approve').length + 1;
        if (approvers < request.approvalsRequired) return { request, outcome: undefined };
        const approved = store.requests.transition(id, ['pending_approval'], 'approved', {
          decidedAt: now,
          expiresAt: now + config.approval.collectWithin,
        }) as RequestRecord;
        audit.append({ type: 'request.approved', actor: identity, requestId: id, data: { approvals: approvers } });
        return { request: approved, outcome: 'request.approved' as const };
      });
      if (outcome) notifier.notify(outcome, request);
      return requestView(requestDetails(store, request), now);
    },

    /**
     * Pending requests this caller may decide: never its own, nor those of jobs it started, nor
     * those it has already decided (a second decision would be refused).
     */
    pending(identity: Identity, cursor: string | undefined, limit: number): { items: RequestView[]; next_cursor: string | null } {
      const now = clock();
      const decidable = (request: RequestRecord) =>
        mayApprove(policy, identity, request) &&
        separationBar(identity, request) === undefined &&
        !store.approvals.list(request.id).some((a) => sameIdentity(a.approver, identity));
      if (identity.kind !== 'person' || !identity.roles.has('approver')) return { items: [], next_cursor: null };

      const { items, next_cursor } = filteredPage(
        (after, count) => store.requests.pending(now, after && { createdAt: after[0], id: after[1] }, count),
        (request) => [request.createdAt, request.id] as const,
        decidable,
        decodeCursor(cursor, ['number', 'string'] as const),
        limit,
      );
      return { items: items.map((request) => requestView(requestDetails(store, request), now)), next_cursor };
    },
  };
}
