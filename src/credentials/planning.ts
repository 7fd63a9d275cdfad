import { checkMayAct } from '../delegation/index.js';
import type { Identity } from '../identity/index.js';
import type { PolicyDecision } from '../policy/index.js';
import type { Rules } from '../settings/index.js';
import { InvalidRequest, RateLimited } from '../shared/errors.js';
import { SHOWING } from '../shared/invisible.js';
import type { ActorRecord } from '../store/index.js';
import { separationError } from './admission.js';
import { requireBinding, type Binding } from './binding.js';
import type { CredentialInput, Plan, Subject } from './requesting.js';

/**
 * Planning a request: what the rules alone say of it, before anything held or done is read. Pure
 * (no store, no clock, no keys), so the credential service and `jit policy test` run the very same
 * judgement: each function returns the plan the broker would admit, or throws the refusal it
 * would answer with (400s that are the caller's fault, 403s that policy makes, the 429 of a
 * break-glass quota of 0).
 */

const DAY_SECONDS = 86_400;

/** What planning reads: the compiled rules of one configuration. */
export type PlanningRules = Pick<Rules, 'config' | 'policy' | 'duties' | 'delegation'>;

/** An actor as records keep it: judged again on these claims by a later configuration. */
export const actorRecord = (actor: Identity): ActorRecord => ({
  iss: actor.iss,
  sub: actor.sub,
  idp: actor.idp,
  person: actor.personKey ?? null,
  initiator: actor.initiator ?? null,
  boundClaims: actor.boundClaims ?? null,
  claims: { ...actor.claims },
});

/** A decision's lifetime capped (a delegation rule's `maxTtl`, a parent's remaining life). */
export const capped = (decision: PolicyDecision, seconds: number): PolicyDecision => ({ ...decision, ttlSeconds: Math.min(decision.ttlSeconds, seconds) });

/**
 * The checks every request meets around its own planning, in order: `authorization_details`
 * types the configuration knows, objects named for every step scope asked for, a break-glass
 * justification long enough, then `planning` (who
 * grants what), then the `separation` rules the request breaks on its own, then the duty steps it
 * takes part in (refusing a step scope that names no object, or two steps of one duty): a child's
 * are its parent's, which are its root grant's, judged on the root's scopes and the details every
 * grant of the line keeps; last, break-glass
 * under a `maxPerIdentityPerDay` of 0.
 */
export function planned(rules: PlanningRules, input: CredentialInput, planning: () => Omit<Plan, 'steps'>): Plan {
  const { config, policy, duties } = rules;
  const details = input.authorizationDetails ?? [];
  duties.checkTypes(details);
  duties.checkObjectsNamed(input.scopes, details);
  if (input.breakGlass && visibleLength(input.justification ?? '') < config.breakGlass.justificationMinLength) {
    throw new InvalidRequest(`Break-glass needs a justification of at least ${config.breakGlass.justificationMinLength} characters.`, [
      { pointer: '#/justification', detail: `at least ${config.breakGlass.justificationMinLength} characters` },
    ]);
  }
  const plan = planning();
  const inRequest = policy.separationConflict(plan.decision.scopes, []);
  if (inRequest) throw separationError(inRequest.rule, inRequest.scopes);
  // A child takes part in its parent's steps on the objects it names, whatever scopes it keeps: a
  // new actor joins the parent's work on them, and must not escape a duty by dropping the step's
  // scope. A parent that named none (issued before a duty of its scopes existed) has no steps to
  // join, and a child cannot add objects: it is judged on its own scopes. The parent's steps are
  // its root's (each grant of the line took part in them), never only those of the scopes it kept:
  // a child that dropped the step's scope would otherwise let a new actor of its own child escape.
  const partOf = plan.parent && details.length > 0 ? plan.parent.rootScopes : plan.decision.scopes;
  const steps = duties.stepsOf(partOf, details);
  // A quota of 0 is spent before anything is held or done, so the rules alone refuse it (the
  // admission counts every other quota). A child is no new use: its parent was counted.
  if (input.breakGlass && !plan.parent && config.breakGlass.maxPerIdentityPerDay === 0) {
    throw new RateLimited('Break-glass quota spent: 0 grants per identity in any 24 hours.', DAY_SECONDS);
  }
  return { ...plan, steps };
}

/** The caller asks for itself: a `requireDpop` scope needs a binding, its own policies decide. */
export function planPlain(rules: PlanningRules, identity: Subject, input: CredentialInput, binding: Binding | undefined): Plan {
  requireBinding(rules.policy, input.scopes, binding);
  return planned(rules, input, () => ({ subject: identity, actors: [], input, binding, decision: rules.policy.decide(identity, input) }));
}

/**
 * An agent acts for a principal: the subject token's `may_act`, when it has one, names this
 * actor; a rule lets this actor act for this subject and lists every scope; each scope is also
 * the subject's own by its policies; the lifetime is capped by the rule.
 */
export function planDelegated(rules: PlanningRules, subject: Identity, actor: Identity, input: CredentialInput, binding: Binding | undefined): Plan {
  checkMayAct(subject.claims, actor);
  requireBinding(rules.policy, input.scopes, binding);
  return planned(rules, input, () => {
    const allowed = rules.delegation.allow(actor, subject, input.scopes);
    const decision = capped(rules.policy.decide(subject, input), allowed.maxTtlSeconds);
    return { subject, actors: [actorRecord(actor)], rule: allowed.rule, input, binding, decision };
  });
}

/**
 * CONTRACT section 4: `justificationMinLength` counts characters that show: letters, digits,
 * punctuation and symbols; not white space, format, combining or filler characters.
 */
const visibleLength = (text: string): number => text.trim().match(SHOWING)?.length ?? 0;
