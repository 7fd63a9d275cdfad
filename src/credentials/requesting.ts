import { actClaim } from '../delegation/index.js';
import { dutyProbe, type DutyStep } from '../duties/index.js';
import type { Identity } from '../identity/index.js';
import type { PolicyDecision } from '../policy/index.js';
import { actorHolders, holderOf, issuedView, pendingView, requestDigest, type IssuedView, type PendingView } from '../requests/index.js';
import type { AuthorizationDetail } from '../shared/authorization-details.js';
import { BrokerError, InvalidRequest, PolicyDenied, RateLimited, SeparationOfDuties } from '../shared/errors.js';
import { uuidv7 } from '../shared/ids.js';
import type { ActorRecord, AuditEntry, RequestRecord, RequestState } from '../store/index.js';
import { admissionProbe, judgeAdmission, judgeRate, refusalEvent } from './admission.js';
import { replayed, type Binding } from './binding.js';
import { issuanceOf, issuedEvent, mintFor, type CredentialServiceDeps } from './grant.js';

/** A credential request as the caller asked for it, already checked for shape. */
export interface CredentialInput {
  taskId: string;
  scopes: string[];
  audience: string;
  ttlSeconds?: number | undefined;
  justification?: string | undefined;
  breakGlass: boolean;
  /** RFC 9396: the objects the task acts on, checked for shape already. */
  authorizationDetails?: AuthorizationDetail[] | undefined;
}

export type RequestOutcome =
  | { status: 'issued'; view: IssuedView }
  | { status: 'pending_approval'; view: PendingView };

/**
 * Whom a request is for: the caller's verified identity, or, for an agent or a child token, the
 * principal it acts for (a child's is its root grant's subject, kept with the grant).
 */
export type Subject = Pick<Identity, 'iss' | 'sub' | 'idp' | 'claims' | 'initiator' | 'person' | 'personKey' | 'boundClaims'>;

/**
 * A request judged by policy and ready to be admitted: for whom, who acts, what it grants. Every
 * request is planned by the rules alone (planning.ts; a child token in delegating.ts); every plan
 * is then admitted the same way.
 */
export interface Plan {
  subject: Subject;
  /** Delegated: the actors, current first. */
  actors: readonly ActorRecord[];
  /** The `delegation` rule that allowed the current actor. */
  rule?: string | undefined;
  /**
   * A child token's parent, which must still be live when the child is admitted, the scopes of
   * its root grant (every grant of the line takes part in the root's steps) and the root's
   * approvals: a child needs no approval of its own because the root's covers it, so its token
   * names the root's approvers.
   */
  parent?: { request: RequestRecord; jti: string; rootScopes: readonly string[]; rootApprovals: RequestState['approvals'] } | undefined;
  input: CredentialInput;
  decision: PolicyDecision;
  /** The steps of duties the request takes part in. */
  steps: DutyStep[];
  /** The key its token is bound to, and the proof that showed it. */
  binding?: Binding | undefined;
}

/** An identity token's claims as kept with a root grant: what a child's subject is judged on, less what only dates the token. */
const keptClaims = (claims: Readonly<Record<string, unknown>>): Record<string, unknown> => {
  const { exp: _exp, iat: _iat, nbf: _nbf, jti: _jti, ...kept } = claims;
  return kept;
};

/**
 * `POST /v1/credentials`, the token exchange, delegated exchanges and child tokens: judged by
 * policy, then by what the principal and its actors already hold or did (one store operation),
 * then issued at once or left for approvers. The token is signed before the admission and leaves
 * only once its records have committed.
 */
export function createRequesting(deps: CredentialServiceDeps) {
  const { settings, store, notifier, logger, clock } = deps;

  /**
   * A request refused by policy before any fact was read: counted toward the principal's and the
   * actors' rates (which may turn it into a 429), and recorded. The rate alone: no other limit
   * would ever admit it, so none may tell the caller to retry.
   */
  async function refuse(caller: Identity | undefined, subject: Subject, actors: readonly ActorRecord[], input: CredentialInput, error: BrokerError, now: number): Promise<never> {
    const { config, policy, people } = settings(caller);
    const probe = { ...admissionProbe(holderOf(subject, subject.personKey, people), [], policy, config, { pending: false, breakGlass: false, now }), actors: actorHolders(actors, people) };
    const refusal = await store.admit(probe, (facts) => {
      const final = judgeRate(facts, config.limits) ?? error;
      return { refuse: refusalEvent(subject, input, final, facts, actClaim(actors)), result: final };
    });
    throw refusal;
  }

  /** Judges a plan against what is held and done, and records it (issuing its token when no approval is needed). */
  async function admit(caller: Identity | undefined, plan: Plan): Promise<RequestOutcome> {
    const { config, policy, people } = settings(caller);
    const { subject, actors, input, decision, steps, parent } = plan;
    const details = input.authorizationDetails ?? [];
    const now = clock();
    const justification = input.justification?.trim() ? input.justification : null;
    const id = uuidv7(now);
    const chain = actClaim(actors);
    const request: RequestRecord = {
      id,
      requester: { iss: subject.iss, sub: subject.sub },
      requesterIdp: subject.idp,
      initiator: subject.initiator ?? null,
      person: subject.personKey ?? null,
      boundClaims: subject.boundClaims ?? null,
      taskId: input.taskId,
      scopes: decision.scopes,
      audience: decision.audience,
      ttlSeconds: decision.ttlSeconds,
      justification,
      breakGlass: input.breakGlass,
      authorizationDetails: details.length > 0 ? details : null,
      act: actors.length > 0 ? [...actors] : null,
      delegationRule: plan.rule ?? null,
      parentId: parent?.request.id ?? null,
      rootId: parent?.request.rootId ?? id,
      subjectClaims: parent ? null : keptClaims(subject.claims),
      dpopJkt: plan.binding?.jkt ?? null,
      policyIds: decision.policyIds,
      digest: requestDigest({
        requestId: id,
        requester: subject,
        initiator: subject.initiator,
        boundClaims: subject.boundClaims,
        ...input,
        ttlSeconds: decision.ttlSeconds,
        justification,
        authorizationDetails: details.length > 0 ? details : null,
        act: chain,
      }),
      approvalsRequired: decision.approvalsRequired,
      status: 'pending_approval',
      createdAt: now,
      expiresAt: now + config.approval.timeout,
      decidedAt: null,
      issuedAt: null,
      endedAt: null,
      revokeReason: null,
      revokedBy: null,
    };
    const created: AuditEntry = {
      type: 'request.created',
      actor: subject,
      requestId: id,
      data: {
        idp: subject.idp,
        task_id: request.taskId,
        scopes: request.scopes,
        audience: request.audience,
        ttl_seconds: request.ttlSeconds,
        justification,
        break_glass: request.breakGlass,
        approvals_required: request.approvalsRequired,
        digest: request.digest,
        policy_ids: request.policyIds,
        ...(request.initiator !== null ? { initiator: request.initiator } : {}),
        ...(request.boundClaims !== null ? { bound_claims: request.boundClaims } : {}),
        ...(request.authorizationDetails !== null ? { authorization_details: request.authorizationDetails } : {}),
        ...(steps.length > 0 ? { duties: steps.map(({ duty, step, object }) => ({ duty, step, object })) } : {}),
        ...(chain ? { act: chain, delegation_rule: request.delegationRule } : {}),
        ...(parent ? { parent_id: parent.request.id, parent_jti: parent.jti } : {}),
      },
    };

    const pending = decision.approvalsRequired > 0;
    const approvals = parent?.rootApprovals ?? [];
    // Sign first, record second: the token exists only in memory until its records (which
    // name its jti and hash) have committed, and is dropped if the admission refuses or fails.
    const token = pending ? undefined : await mintFor(deps, request, approvals, now, parent?.request.expiresAt);
    const admitted: RequestRecord = token ? { ...request, status: 'issued', issuedAt: token.issuedAt, expiresAt: token.expiresAt } : request;
    // A child is no new break-glass use: its parent was counted, and reviewed.
    const ask = { pending, breakGlass: input.breakGlass && !parent, now };
    const holder = holderOf(subject, subject.personKey, people);
    const others = actorHolders(actors, people);
    const probe = {
      ...admissionProbe(holder, decision.scopes, policy, config, ask),
      actors: others,
      parent: parent?.request.id,
      duties: dutyProbe(steps, [holder, ...others], now),
      proof: plan.binding?.proof,
    };
    const outcome = await store.admit(probe, (facts) => {
      const refusal =
        (facts.replayed ? replayed() : undefined) ??
        judgeAdmission(facts, config, ask, policy, decision.scopes) ??
        (parent ? parentRefusal(facts.parent, now) : undefined);
      if (refusal) return { refuse: refusalEvent(subject, input, refusal, facts, chain), result: refusal };
      const events: AuditEntry[] = [created];
      if (ask.breakGlass) {
        events.push({
          type: 'breakglass.used',
          actor: subject,
          requestId: id,
          data: { scopes: admitted.scopes, audience: admitted.audience, justification, ttl_seconds: admitted.ttlSeconds, ...(chain ? { act: chain } : {}) },
        });
      }
      if (token) events.push(issuedEvent(admitted, token, approvals, parent?.jti));
      return {
        admit: {
          request: admitted,
          ...(token ? { issuance: issuanceOf(admitted, token, decision.grantedBy) } : {}),
          ...(ask.breakGlass && token ? { reviewDueAt: token.issuedAt + config.breakGlass.reviewWithin } : {}),
          events,
        },
        result: undefined,
      };
    });
    if (outcome instanceof BrokerError) throw outcome;

    if (!token) {
      notifier.notify('approval.requested', admitted);
      return { status: 'pending_approval', view: pendingView(admitted) };
    }
    if (ask.breakGlass) {
      logger.warn(
        { request_id: id, requester: admitted.requester, scopes: admitted.scopes, audience: admitted.audience, ...(chain ? { act: chain } : {}) },
        'BREAK-GLASS credential issued; it awaits post-review',
      );
      notifier.notify('breakglass.used', admitted);
    }
    return { status: 'issued', view: issuedView(admitted, token) };
  }

  return {
    admit,

    /**
     * Judges a plan's policy part (planning.ts): throws a refusal that is the caller's fault
     * (400), records and throws one the configuration makes (403, and the 429 of a break-glass
     * quota of 0, recorded as when the admission counted it), and returns the plan otherwise.
     */
    async judge(caller: Identity | undefined, subject: Subject, actors: readonly ActorRecord[], input: CredentialInput, planning: () => Plan): Promise<Plan> {
      try {
        return planning();
      } catch (error) {
        // Refused by the rules before any fact is read: still counted toward the rates, and recorded.
        if (!(error instanceof PolicyDenied) && !(error instanceof SeparationOfDuties) && !(error instanceof RateLimited)) throw error;
        return refuse(caller, subject, actors, input, error, clock());
      }
    },
  };
}

/** A child is admitted only while its parent grant lives: not revoked, not expired (the sweep aside). */
function parentRefusal(parent: RequestRecord | undefined, now: number): BrokerError | undefined {
  if (parent && parent.status === 'issued' && parent.expiresAt > now) return undefined;
  const state = !parent ? 'gone' : parent.status === 'issued' ? 'expired' : parent.status;
  return new InvalidRequest(`The subject_token's grant is ${state}: a child token needs a live parent.`);
}
