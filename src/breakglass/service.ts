import type { AuditLog } from '../audit/log.js';
import { requireRole, type Identity } from '../identity/index.js';
import type { Policy } from '../policy/index.js';
import { mayApprove, maySee, requestDetails, requestView, separationBar, type RequestView } from '../requests/index.js';
import type { Clock } from '../shared/clock.js';
import { decodeCursor, filteredPage } from '../shared/cursor.js';
import { Conflict, NotFound, PolicyDenied, SeparationOfDuties } from '../shared/errors.js';
import type { ReviewOutcome, Store } from '../store/index.js';

export interface ReviewInput {
  outcome: ReviewOutcome;
  notes: string;
}

export interface BreakGlassServiceDeps {
  policy: Policy;
  store: Store;
  audit: AuditLog;
  clock: Clock;
}

export type BreakGlassService = ReturnType<typeof createBreakGlassService>;

/** After the emergency: every break-glass grant is reviewed, once, by someone other than its requester. */
export function createBreakGlassService(deps: BreakGlassServiceDeps) {
  const { policy, store, audit, clock } = deps;

  return {
    /**
     * Records the post-review. The reviewer must be an approver who could have approved the
     * request's scopes, and neither its requester nor the person who started its job.
     */
    review(identity: Identity, id: string, input: ReviewInput): RequestView {
      const now = clock();
      const reviewed = store.transaction(() => {
        const request = store.requests.get(id);
        if (!request || !request.breakGlass || !maySee(policy, identity, request)) {
          throw new NotFound(`No break-glass grant ${id} that you may see.`);
        }
        const bar = separationBar(identity, request);
        if (bar) throw new SeparationOfDuties(`Separation of duties: ${bar.replace('decide', 'review')}.`);
        if (!mayApprove(policy, identity, request)) throw PolicyDenied.action('Only an approver of its scopes may review a break-glass grant.');
        if (!store.reviews.record(id, input.outcome, input.notes, identity, now)) {
          throw new Conflict('This break-glass grant has already been reviewed.');
        }
        audit.append({
          type: 'breakglass.reviewed',
          actor: identity,
          requestId: id,
          data: { outcome: input.outcome, notes: input.notes },
        });
        return request;
      });
      return requestView(requestDetails(store, reviewed), now);
    },

    /**
     * Break-glass grants by review state: auditors and admins see all of them, an approver those
     * whose scopes it may approve.
     */
    list(identity: Identity, state: 'pending' | 'done', cursor: string | undefined, limit: number) {
      requireRole(identity, 'approver', 'auditor', 'admin');
      const now = clock();
      const seesAll = identity.roles.has('auditor') || identity.roles.has('admin');
      const { items, next_cursor } = filteredPage(
        (after, count) => store.reviews.list(state, after && { dueAt: after[0], requestId: after[1] }, count),
        (row) => [row.dueAt, row.request.id] as const,
        (row) => seesAll || mayApprove(policy, identity, row.request),
        decodeCursor(cursor, ['number', 'string'] as const),
        limit,
      );
      return { items: items.map((row) => requestView(requestDetails(store, row.request), now)), next_cursor };
    },
  };
}
