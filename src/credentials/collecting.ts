import { checkMayAct } from '../delegation/index.js';
import { dutyConflict, dutyProbe, type DutyStep } from '../duties/index.js';
import type { Identity } from '../identity/index.js';
import type { PolicyDecision } from '../policy/index.js';
import { approvalsNeeded, effectiveStatus, isActor, isOwner, isRequester, issuedView, peopleApproving, requestParticipants, type IssuedView } from '../requests/index.js';
import { Conflict, InvalidRequest, PolicyDenied, SeparationOfDuties } from '../shared/errors.js';
import type { RequestRecord, RequestState } from '../store/index.js';
import { proofByRequestKey, replayed, requireBinding, type PresentedProof } from './binding.js';
import { issuanceOf, issuedEvent, mintFor, notVisible, type CredentialServiceDeps } from './grant.js';

/**
 * Who may poll or collect a request: its subject, from the job it asked from, and for a delegated
 * request its current actor, likewise, presented with it; the fresh subject token's `may_act`,
 * when it has one, naming that actor, as at the exchange. To another identity, or another run of
 * their job, the request does not exist.
 */
export function checkCollector(identity: Identity, id: string, request: RequestRecord, actor?: Identity): void {
  if (!isOwner(identity, request) || (actor && !isOwner(actor, request))) throw notVisible(id);
  const current = request.act?.[0];
  if (current && !actor) throw new Conflict('A delegated request is collected at /oauth2/token, with its subject and its actor tokens.');
  if (actor && (!current || !isActor(actor, current) || !isRequester(identity, request))) {
    throw new InvalidRequest('The subject_token and actor_token are not the subject and the actor of this request.');
  }
  if (actor) checkMayAct(identity.claims, actor);
}

/**
 * The requester collects the token of an approved request, exactly once; a delegated request,
 * by presenting its subject and its actor again (at `/oauth2/token` only), each from the job it
 * asked from, the subject token's `may_act` naming the actor when it has one. Approval does not
 * outlive the configuration it was given under: the token is minted only for scopes the running
 * configuration still grants to this identity (and lets this actor ask for), for the audience and
 * no longer than it allows now, and only when its participants (under the running aliases) took
 * part in no other step (under the running duties) of its objects. A request it no longer grants
 * ends `denied`, with the reason in its event and a `request.denied` webhook, and the collector
 * is told why (409).
 */
export function createCollecting(deps: CredentialServiceDeps) {
  const { settings, store, clock } = deps;

  return async function collect(identity: Identity, id: string, actor?: Identity, presented?: PresentedProof): Promise<IssuedView> {
    const running = settings(identity);
    const { policy, delegation, duties, people } = running;
    const now = clock();
    const notCollectable = (status: string) =>
      new Conflict(`The request is ${status}; only an approved request's token can be collected, and only once.`);
    const check = (state: RequestState | undefined): RequestState => {
      if (!state) throw notVisible(id);
      checkCollector(identity, id, state.request, actor);
      const status = effectiveStatus(state.request, now);
      if (status !== 'approved') throw notCollectable(status);
      return state;
    };
    type Regranted = Pick<PolicyDecision, 'ttlSeconds' | 'grantedBy'> & { steps: DutyStep[] };
    /** What the running policy, delegation rules and duties make of this request now: its lifetime, granting policies and steps, or why nothing. */
    const regrant = (request: RequestRecord): Regranted | PolicyDenied | InvalidRequest | SeparationOfDuties => {
      try {
        const allowed = actor ? delegation.allow(actor, identity, request.scopes) : undefined;
        const decision = policy.decide(identity, request);
        const steps = duties.stepsOf(request.scopes, request.authorizationDetails ?? []);
        return { ttlSeconds: Math.min(decision.ttlSeconds, allowed?.maxTtlSeconds ?? Number.POSITIVE_INFINITY), grantedBy: decision.grantedBy, steps };
      } catch (error) {
        if (error instanceof PolicyDenied || error instanceof InvalidRequest || error instanceof SeparationOfDuties) return error;
        throw error;
      }
    };

    /**
     * Approvals counted again under the running aliases (a reload may have made an approver the
     * requester's person, or two approvers one) against the count the running scopes ask (a
     * reload may have raised it since the approval).
     */
    const unapproved = (request: RequestRecord, approvals: RequestState['approvals']): SeparationOfDuties | PolicyDenied | undefined => {
      const counted = peopleApproving(approvals, request, people);
      if (counted < request.approvalsRequired) {
        return new SeparationOfDuties(`${counted} of the ${request.approvalsRequired} approvals it needs count now: an approver is the requester's person or started its job, or two approvers are one person.`);
      }
      const needed = approvalsNeeded(request, policy);
      return counted < needed ? PolicyDenied.action(`${counted} of the ${needed} approvals its scopes ask now count: the configuration asks more than when it was approved.`) : undefined;
    };
    const before = check(await store.requests.state(id));
    const binding = await proofByRequestKey(presented, running, now, before.request.dpopJkt, 'collect it with a proof by the same key');
    requireBinding(policy, before.request.scopes, binding, 'collect it with a DPoP proof');
    const granted = regrant(before.request);
    const regranted = granted instanceof Error ? undefined : granted;
    const request = { ...before.request, ...(regranted ? { ttlSeconds: regranted.ttlSeconds } : {}), dpopJkt: binding?.jkt ?? null };
    // Recorded as taking part again, approvers too: an alias or a step added since the request was
    // made, or approved, counts from now on.
    const takesPart = regranted && dutyProbe(regranted.steps, requestParticipants(before, people), now);
    const token = regranted ? await mintFor(deps, request, before.approvals, now) : undefined;
    type Collected = { issued: RequestRecord } | { denied: RequestRecord; refusal: Conflict };
    const outcome = await store.change<Collected>(id, (current, facts) => {
      if (facts.replayed) throw replayed();
      const { request: latest, approvals } = check(current);
      const refused = granted instanceof Error ? granted : (facts.duty && dutyConflict(facts.duty, 'request')) || unapproved(latest, approvals);
      if (!token || refused) {
        const refusal = new Conflict(`The request can no longer be collected: the running configuration does not grant it (${refused?.detail})`, {
          ...(refused instanceof SeparationOfDuties ? { extensions: refused.extensions } : {}),
        });
        const fields = { decidedAt: now, endedAt: now };
        const reason = refused instanceof SeparationOfDuties ? 'separation_of_duties' : 'policy_changed';
        return {
          transition: { from: ['approved'] as const, to: 'denied' as const, fields },
          events: [{ type: 'request.denied', actor: null, requestId: id, data: { reason, detail: refusal.detail } }],
          result: { denied: { ...latest, status: 'denied', ...fields }, refusal },
        };
      }
      const fields = { issuedAt: token.issuedAt, expiresAt: token.expiresAt, dpopJkt: request.dpopJkt };
      const updated: RequestRecord = { ...latest, ttlSeconds: request.ttlSeconds, status: 'issued', ...fields };
      return {
        transition: { from: ['approved'], to: 'issued', fields },
        issuance: issuanceOf(updated, token, regranted?.grantedBy ?? {}),
        participants: takesPart,
        events: [issuedEvent(updated, token, approvals)],
        result: { issued: updated },
      };
    }, { duties: takesPart, proof: binding?.proof });
    if ('denied' in outcome) {
      // Told once the denial has committed, as every decision is.
      deps.notifier.notify('request.denied', outcome.denied);
      throw outcome.refusal;
    }
    deps.observer?.tokenIssued({ breakGlass: outcome.issued.breakGlass, approved: true });
    return issuedView(outcome.issued, token as NonNullable<typeof token>);
  };
}
