import type { Identity } from '../identity/index.js';
import { quietObserver, refusalOutcome } from '../observability/observer.js';
import { isOwner, maySee, requestView, type IssuedView, type RequestView } from '../requests/index.js';
import { decodeCursor, LISTING_SCAN_BUDGET, scanPage } from '../shared/cursor.js';
import { BrokerError } from '../shared/errors.js';
import type { RequestStatus } from '../store/index.js';
import { createCollecting } from './collecting.js';
import type { PresentedProof } from './binding.js';
import { createDelegating, type ChildInput } from './delegating.js';
import { createEnding } from './ending.js';
import { notVisible, type CredentialServiceDeps } from './grant.js';
import { createPolling } from './polling.js';
import { createRequesting, type CredentialInput, type RequestOutcome } from './requesting.js';

export type CredentialService = ReturnType<typeof createCredentialService>;

/**
 * The life of a grant: asked for, decided by policy (and by approvers, elsewhere), minted and
 * recorded, collected, completed, revoked. Every change is one store operation that writes the
 * change with its audit events, and a token leaves only after that operation has committed.
 */
export function createCredentialService(deps: CredentialServiceDeps) {
  const { settings, store, clock } = deps;
  const observer = deps.observer ?? quietObserver;
  const delegating = createDelegating(deps, createRequesting(deps));
  const collecting = createCollecting(deps);
  const polling = createPolling(deps, collecting);
  const end = createEnding(deps);

  /** Every answered request counted by its outcome, and every token issued at once. */
  async function observed(asking: Promise<RequestOutcome>): Promise<RequestOutcome> {
    let outcome: RequestOutcome;
    try {
      outcome = await asking;
    } catch (error) {
      observer.credentialRequested(refusalOutcome(error instanceof BrokerError ? error.type : undefined));
      throw error;
    }
    observer.credentialRequested(outcome.status);
    if (outcome.status === 'issued') observer.tokenIssued({ breakGlass: outcome.view.break_glass, approved: false });
    return outcome;
  }

  return {
    /** `POST /v1/credentials` and the token exchange: issue at once, or open a request for approval. */
    request: (identity: Identity, input: CredentialInput, proof?: PresentedProof) => observed(delegating.plain(identity, input, proof)),

    /** An agent acting for a principal (RFC 8693 `actor_token`). */
    delegate: (subject: Identity, actor: Identity, input: CredentialInput, proof?: PresentedProof) => observed(delegating.delegated(subject, actor, input, proof)),

    /** A broker token exchanged for a narrower child, by its holder, with or without a new actor. */
    child: (token: string, actor: Identity | undefined, input: ChildInput, proof?: PresentedProof) => observed(delegating.child(token, actor, input, proof)),

    /** A request, for whoever may see it; anyone else learns nothing, not even that it exists. */
    async get(identity: Identity, id: string): Promise<RequestView> {
      const state = await store.requests.state(id);
      if (!state || !maySee(settings(identity).policy, identity, state.request)) throw notVisible(id);
      return requestView(state, clock());
    },

    /**
     * `GET /v1/credentials`: the caller's own requests, newest first: those it asked for (from its
     * job, where its issuer binds jobs) and the delegated requests it acts in (from the job it
     * acted from), the same owners `isOwner` lets see, collect, complete and revoke them.
     */
    async list(identity: Identity, status: RequestStatus | undefined, cursor: string | undefined, limit: number) {
      const now = clock();
      return scanPage({
        read: (after, count) =>
          store.requests.owned({ iss: identity.iss, sub: identity.sub, boundClaims: identity.boundClaims ?? null }, { status, now }, after && { createdAt: after[0], id: after[1] }, count),
        key: (request) => [request.createdAt, request.id] as const,
        async select(requests, wanted) {
          const owned = requests.filter((request) => isOwner(identity, request)).slice(0, wanted);
          const views = new Map((await store.requests.states(owned)).map((state) => [state.request.id, requestView(state, now)]));
          return requests.map((request) => views.get(request.id));
        },
        after: decodeCursor(cursor, ['number', 'string'] as const),
        limit,
        budget: LISTING_SCAN_BUDGET,
      });
    },

    /** The requester collects the token of an approved request, exactly once; a delegated one with its actor. */
    collect: (identity: Identity, id: string, actor?: Identity, proof?: PresentedProof): Promise<IssuedView> => collecting(identity, id, actor, proof),

    /** `/oauth2/token` with `request_id`: the token of an approved request, or word that it still awaits approval. */
    poll: (identity: Identity, id: string, actor?: Identity, proof?: PresentedProof): Promise<RequestOutcome> => polling(identity, id, actor, proof),

    complete: (identity: Identity, id: string) => end(identity, id, 'task_completed'),

    revoke: (identity: Identity, id: string, reason: string) => end(identity, id, reason),
  };
}
