import type { MatchConfig } from '../config/index.js';
import type { Identity } from '../identity/index.js';
import type { CapSource, PolicyExplanation, ScopeExplanation } from '../policy/index.js';
import type { Rules } from '../settings/index.js';
import { BrokerError } from '../shared/errors.js';
import { caseIdentity, CaseIdentityRefused, credentialInput, evaluateCase, type CaseAsk, type CaseOutcome } from './evaluate.js';

/**
 * `jit policy explain`: the view an approver or an auditor asks for, read from the same compiled
 * rules that decide (the policy's own `explain`, the duties' steps, the delegation rules, the
 * scopes' DPoP and approval settings), with the outcome the broker would give, judged exactly as
 * `jit policy test` judges a case.
 */

/** Who an identity is to the broker. */
export interface IdentityView {
  iss: string;
  sub: string;
  idp: string;
  kind: 'workload' | 'person';
  roles: string[];
  /** The person separation counts it as, if any (`u:bob`, `i:sso:sub`). */
  person?: string;
  /** Workloads: who started the job. */
  initiator?: string;
}

export interface ScopeView extends ScopeExplanation {
  /** The duty step the scope is, if it is one. */
  step?: { duty: string; step: string; type: string };
  requireDpop: boolean;
  /** Distinct people who must approve (0: issued at once). */
  approvals: number;
  /** The scope's `approvers`, narrowing who among approvers may decide. */
  approvers?: MatchConfig;
}

/** Where the token's lifetime comes from: a scope's cap, or a delegation rule's, or the asked `ttl_seconds`. */
export type LifetimeSource = (CapSource & { scope: string }) | { kind: 'delegation'; rule: string } | { kind: 'requested' };

export interface RequestExplanation {
  identity: IdentityView | { refused: string };
  actor?: IdentityView | { refused: string };
  outcome: CaseOutcome;
  /** How the policies stand, when the identity is one the broker would accept. */
  policy?: PolicyExplanation;
  scopes: ScopeView[];
  /** `roles` rules giving the approver role: who may approve at all. */
  approverRoles: MatchConfig[];
  /** With an actor: the delegation rule that lets it act for the identity, or why none does. */
  delegation?: { rule: string; maxTtlSeconds?: number } | { refused: string };
  /** The effective lifetime and what caps it, when the request is granted. */
  lifetime?: { seconds: number; from: LifetimeSource };
}

const identityView = (identity: Identity): IdentityView => ({
  iss: identity.iss,
  sub: identity.sub,
  idp: identity.idp,
  kind: identity.kind,
  roles: [...identity.roles],
  ...(identity.person !== undefined ? { person: identity.person } : {}),
  ...(identity.initiator !== undefined ? { initiator: identity.initiator } : {}),
});

/** An identity as the broker would take it, or why it would not. */
function judged(rules: Rules, given: CaseAsk['identity'], as: 'identity' | 'actor'): Identity | { refused: string } {
  try {
    return caseIdentity(rules, given, as);
  } catch (error) {
    if (error instanceof CaseIdentityRefused) return { refused: error.message };
    throw error;
  }
}

export function explainRequest(rules: Rules, ask: CaseAsk): RequestExplanation {
  const { policy, duties, delegation, config } = rules;
  const input = credentialInput(ask.request);
  const identity = judged(rules, ask.identity, 'identity');
  const actor = ask.actor && judged(rules, ask.actor, 'actor');
  const outcome = evaluateCase(rules, ask);
  const accepted = 'refused' in identity ? undefined : identity;
  const explained = accepted && policy.explain(accepted, input);

  const scopes: ScopeView[] = ask.request.scopes.map((name, i) => {
    const scope = policy.scope(name);
    const step = duties.stepOf(name);
    return {
      ...(explained?.scopes[i] ?? { scope: name, config: scope, policies: [] }),
      ...(step ? { step } : {}),
      requireDpop: scope?.requireDpop ?? false,
      approvals: scope?.approvals ?? 0,
      ...(scope?.approvers ? { approvers: scope.approvers } : {}),
    };
  });

  let allowance: RequestExplanation['delegation'];
  if (actor && accepted) {
    if ('refused' in actor) allowance = { refused: actor.refused };
    else {
      try {
        const allowed = delegation.allow(actor, accepted, input.scopes);
        allowance = { rule: allowed.rule, ...(Number.isFinite(allowed.maxTtlSeconds) ? { maxTtlSeconds: allowed.maxTtlSeconds } : {}) };
      } catch (error) {
        if (!(error instanceof BrokerError)) throw error;
        allowance = { refused: error.detail };
      }
    }
  }

  return {
    identity: 'refused' in identity ? identity : identityView(identity),
    ...(actor ? { actor: 'refused' in actor ? actor : identityView(actor) } : {}),
    outcome,
    ...(explained ? { policy: explained } : {}),
    scopes,
    approverRoles: config.roles.filter((rule) => rule.role === 'approver').map((rule) => rule.match),
    ...(allowance ? { delegation: allowance } : {}),
    ...(outcome.ttlSeconds !== undefined ? { lifetime: { seconds: outcome.ttlSeconds, from: lifetimeSource(scopes, allowance, outcome.ttlSeconds) } } : {}),
  };
}

/** What sets the effective lifetime: the smallest cap of a scope, else the delegation rule's, else the asked lifetime. */
function lifetimeSource(scopes: readonly ScopeView[], allowance: RequestExplanation['delegation'], seconds: number): LifetimeSource {
  const capping = scopes.find((scope) => scope.cap?.seconds === seconds);
  if (capping?.cap) return { ...capping.cap.from, scope: capping.scope };
  if (allowance && 'rule' in allowance && allowance.maxTtlSeconds === seconds) return { kind: 'delegation', rule: allowance.rule };
  return { kind: 'requested' };
}
