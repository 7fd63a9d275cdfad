import type { Identity } from '../identity/index.js';
import { effectiveStatus, pendingView } from '../requests/index.js';
import { proofByRequestKey, replayed, type PresentedProof } from './binding.js';
import { checkCollector, type createCollecting } from './collecting.js';
import { notVisible, type CredentialServiceDeps } from './grant.js';
import type { RequestOutcome } from './requesting.js';

/**
 * The token endpoint with `request_id` (CONTRACT section 4): an approved request's token,
 * collected, or `authorization_pending` while it awaits approval. The wait is told as the token
 * would be given: to its subject and actor, each from its job (`checkCollector`), and for a
 * request made with a DPoP proof only with a valid proof by that key, used once (RFC 9449 section
 * 11.1), so that the subject token alone learns nothing of it.
 */
export function createPolling(deps: CredentialServiceDeps, collect: ReturnType<typeof createCollecting>) {
  const { settings, store, clock } = deps;

  return async function poll(identity: Identity, id: string, actor?: Identity, presented?: PresentedProof): Promise<RequestOutcome> {
    const running = settings(identity);
    const now = clock();
    const state = await store.requests.state(id);
    if (!state) throw notVisible(id);
    const { request } = state;
    checkCollector(identity, id, request, actor);
    if (effectiveStatus(request, now) !== 'pending_approval') return { status: 'issued', view: await collect(identity, id, actor, presented) };

    const binding = await proofByRequestKey(presented, running, now, request.dpopJkt, 'poll it with a proof by the same key');
    if (binding?.proof) {
      await store.change(
        id,
        (_current, facts) => {
          if (facts.replayed) throw replayed();
          return { events: [], result: undefined };
        },
        { proof: binding.proof },
      );
    }
    return { status: 'pending_approval', view: pendingView(request) };
  };
}
