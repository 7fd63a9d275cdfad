import { dutyProbe, type DutyStep } from '../duties/index.js';
import type { Identity } from '../identity/index.js';
import { holderOf, issuedView, pendingView, requestDigest, type IssuedView, type PendingView } from '../requests/index.js';
import { BrokerError, InvalidRequest, PolicyDenied, SeparationOfDuties } from '../shared/errors.js';
import { uuidv7 } from '../shared/ids.js';
import { SHOWING } from '../shared/invisible.js';
import type { AuthorizationDetail } from '../shared/authorization-details.js';
import type { AuditEntry, RequestRecord } from '../store/index.js';
import { admissionProbe, judgeAdmission, refusalEvent, separationError } from './admission.js';
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
 * `POST /v1/credentials` and the token exchange: judged by policy, then by what the caller
 * already holds (one store operation), then issued at once or left for approvers. The token is
 * signed before the admission and leaves only once its records have committed.
 */
export function createRequesting(deps: CredentialServiceDeps) {
  const { settings, store, notifier, logger, clock } = deps;

  /** A request refused before any fact was read: counted toward the rate (which may turn it into a 429), and recorded. */
  async function refuse(identity: Identity, input: CredentialInput, error: BrokerError, now: number): Promise<never> {
    const { config, policy, people } = settings(identity);
    const probe = admissionProbe(holderOf(identity, people), [], policy, config, { pending: false, breakGlass: false, now });
    const refusal = await store.admit(probe, (facts) => {
      const final = judgeAdmission(facts, config, { pending: false, breakGlass: false, now }, policy, []) ?? error;
      return { refuse: refusalEvent(identity, input, final, facts), result: final };
    });
    throw refusal;
  }

  return async function request(identity: Identity, input: CredentialInput): Promise<RequestOutcome> {
    const { config, policy, people, duties } = settings(identity);
    const details = input.authorizationDetails ?? [];
    duties.checkTypes(details);
    const justification = input.justification?.trim() ? input.justification : null;
    if (input.breakGlass && visibleLength(justification ?? '') < config.breakGlass.justificationMinLength) {
      throw new InvalidRequest(`Break-glass needs a justification of at least ${config.breakGlass.justificationMinLength} characters.`, [
        { pointer: '#/justification', detail: `at least ${config.breakGlass.justificationMinLength} characters` },
      ]);
    }
    const now = clock();

    // Refused by policy before any fact is read: still counted toward the caller's rate, and recorded.
    let decision;
    let steps: DutyStep[];
    try {
      decision = policy.decide(identity, input);
      const inRequest = policy.separationConflict(input.scopes, []);
      if (inRequest) throw separationError(inRequest.rule, inRequest.scopes);
      steps = duties.stepsOf(decision.scopes, details);
    } catch (error) {
      if (!(error instanceof PolicyDenied) && !(error instanceof SeparationOfDuties)) throw error;
      return refuse(identity, input, error, now);
    }
    const holder = holderOf(identity, people);

    const id = uuidv7(now);
    const request: RequestRecord = {
      id,
      requester: { iss: identity.iss, sub: identity.sub },
      requesterIdp: identity.idp,
      initiator: identity.initiator ?? null,
      person: identity.personKey ?? null,
      boundClaims: identity.boundClaims ?? null,
      taskId: input.taskId,
      scopes: decision.scopes,
      audience: decision.audience,
      ttlSeconds: decision.ttlSeconds,
      justification,
      breakGlass: input.breakGlass,
      authorizationDetails: details.length > 0 ? details : null,
      policyIds: decision.policyIds,
      digest: requestDigest({
        requestId: id,
        requester: identity,
        initiator: identity.initiator,
        boundClaims: identity.boundClaims,
        ...input,
        ttlSeconds: decision.ttlSeconds,
        justification,
        authorizationDetails: details.length > 0 ? details : null,
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
      actor: identity,
      requestId: id,
      data: {
        idp: identity.idp,
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
      },
    };

    const pending = decision.approvalsRequired > 0;
    // Sign first, record second: the token exists only in memory until its records (which
    // name its jti and hash) have committed, and is dropped if the admission refuses or fails.
    const token = pending ? undefined : await mintFor(deps, request, [], now);
    const admitted: RequestRecord = token ? { ...request, status: 'issued', issuedAt: token.issuedAt, expiresAt: token.expiresAt } : request;
    const ask = { pending, breakGlass: input.breakGlass, now };
    const probe = { ...admissionProbe(holder, decision.scopes, policy, config, ask), duties: dutyProbe(steps, [holder], now) };
    const outcome = await store.admit(probe, (facts) => {
      const refusal = judgeAdmission(facts, config, ask, policy, decision.scopes);
      if (refusal) return { refuse: refusalEvent(identity, input, refusal, facts), result: refusal };
      const events: AuditEntry[] = [created];
      if (input.breakGlass) {
        events.push({
          type: 'breakglass.used',
          actor: identity,
          requestId: id,
          data: { scopes: admitted.scopes, audience: admitted.audience, justification, ttl_seconds: admitted.ttlSeconds },
        });
      }
      if (token) events.push(issuedEvent(admitted, token, []));
      return {
        admit: {
          request: admitted,
          ...(token ? { issuance: issuanceOf(admitted, token) } : {}),
          ...(input.breakGlass && token ? { reviewDueAt: token.issuedAt + config.breakGlass.reviewWithin } : {}),
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
    if (input.breakGlass) {
      logger.warn(
        { request_id: id, requester: admitted.requester, scopes: admitted.scopes, audience: admitted.audience },
        'BREAK-GLASS credential issued; it awaits post-review',
      );
      notifier.notify('breakglass.used', admitted);
    }
    return { status: 'issued', view: issuedView(admitted, token) };
  };
}

/**
 * CONTRACT section 4: `justificationMinLength` counts characters that show: letters, digits,
 * punctuation and symbols; not white space, format, combining or filler characters.
 */
const visibleLength = (text: string): number => text.match(SHOWING)?.length ?? 0;
