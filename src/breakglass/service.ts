import { requireRole, type Identity } from '../identity/index.js';
import { mayApprove, maySee, refusalsRecorded, requestView, separationBar, separationMessage, type RequestView } from '../requests/index.js';
import type { Settings } from '../settings/index.js';
import type { Clock } from '../shared/clock.js';
import { decodeCursor, LISTING_SCAN_BUDGET, scanPage } from '../shared/cursor.js';
import { Conflict, NotFound, PolicyDenied, SeparationOfDuties } from '../shared/errors.js';
import type { ReviewOutcome, Store } from '../store/index.js';

export interface ReviewInput {
  outcome: ReviewOutcome;
  notes: string;
}

export interface BreakGlassServiceDeps {
  settings: (caller?: Identity) => Settings;
  store: Store;
  clock: Clock;
}

export type BreakGlassService = ReturnType<typeof createBreakGlassService>;

/** After the emergency: every break-glass grant is reviewed, once, by someone other than its requester. */
export function createBreakGlassService(deps: BreakGlassServiceDeps) {
  const { settings, store, clock } = deps;
  const mayList = (identity: Identity) => requireRole(identity, 'approver', 'auditor', 'admin');

  return {
    /** Refuses (403) anyone who may not list break-glass grants, before what they ask is read. */
    authorizeListing: mayList,

    /**
     * Records the post-review. The reviewer must be an approver who could have approved the
     * request's scopes, and neither its requester nor the person who asked or started its job,
     * nor an actor of it or of any token made from it (whose use this review covers), under any
     * identity.
     */
    async review(identity: Identity, id: string, input: ReviewInput): Promise<RequestView> {
      const { policy, people } = settings(identity);
      const now = clock();
      const after = await refusalsRecorded(store, identity, id, 'review', now, () => store.change(id, (state) => {
        if (!state || !state.request.breakGlass || !maySee(policy, identity, state.request)) {
          throw new NotFound(`No break-glass grant ${id} that you may see.`);
        }
        const bar = [state.request, ...(state.descendants ?? []).map((child) => child.request)].map((r) => separationBar(identity, r, people)).find(Boolean);
        if (bar) throw new SeparationOfDuties(separationMessage(bar, 'review'));
        if (!mayApprove(policy, identity, state.request)) throw PolicyDenied.action('Only an approver of its scopes may review a break-glass grant.');
        // A child of a break-glass grant has no review of its own: its root's covers it.
        if (!state.review) throw new Conflict(`A token made from a break-glass grant is reviewed with that grant: review ${state.request.rootId}.`);
        if (state.review.outcome !== null) throw new Conflict('This break-glass grant has already been reviewed.');
        const reviewer = { iss: identity.iss, sub: identity.sub };
        return {
          review: { outcome: input.outcome, notes: input.notes, reviewer, at: now },
          events: [{ type: 'breakglass.reviewed', actor: identity, requestId: id, data: { outcome: input.outcome, notes: input.notes } }],
          result: { ...state, review: { ...state.review, outcome: input.outcome, notes: input.notes, reviewer, reviewedAt: now } },
        };
      }, { descendants: 'all' }));
      return requestView(after, now);
    },

    /**
     * Break-glass grants by review state: auditors and admins see all of them, an approver those
     * whose scopes it may approve. Each page reads a bounded number of rows.
     */
    async list(identity: Identity, state: 'pending' | 'done', cursor: string | undefined, limit: number) {
      mayList(identity);
      const { policy } = settings(identity);
      const now = clock();
      const seesAll = identity.roles.has('auditor') || identity.roles.has('admin');
      return scanPage({
        read: (after, count) => store.reviews.list(state, after && { dueAt: after[0], requestId: after[1] }, count),
        key: (row) => [row.dueAt, row.request.id] as const,
        async select(rows) {
          const visible = rows.filter((row) => seesAll || mayApprove(policy, identity, row.request)).map((row) => row.request);
          const states = new Map((await store.requests.states(visible)).map((s) => [s.request.id, s]));
          return rows.map((row) => {
            const found = states.get(row.request.id);
            return found ? requestView(found, now) : undefined;
          });
        },
        after: decodeCursor(cursor, ['number', 'string'] as const),
        limit,
        budget: LISTING_SCAN_BUDGET,
      });
    },
  };
}
