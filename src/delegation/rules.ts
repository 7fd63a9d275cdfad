import type { BrokerConfig } from '../config/index.js';
import { compileMatch, type IdentityMatcher, type Matchable } from '../identity/index.js';
import { InvalidRequest, PolicyDenied } from '../shared/errors.js';
import type { ActClaim } from '../shared/act.js';
import type { Principal } from '../store/index.js';

/**
 * Agents, CONTRACT section 1 "Agents (delegation)": an AI agent or tool acting for a principal
 * is neither the principal nor a free-standing workload. These are the rules, pure: which rule
 * lets an actor act for a subject and for which scopes, `may_act`, the depth of a chain, and the
 * RFC 8693 `act` claim that names the chain.
 */

/** The rule that lets an actor act for a subject, as a request is judged by it. */
export interface Allowance {
  rule: string;
  /** Caps the token's lifetime, in seconds (Infinity: the rule sets none). */
  maxTtlSeconds: number;
}

export interface Delegation {
  /** Actors in one chain at most. */
  readonly maxDepth: number;
  /**
   * The first rule, in configuration order, letting `actor` act for `subject` for every one of
   * `scopes`. Refuses (`invalid_request`) when no rule lets this actor act for this subject at
   * all, and (`invalid_scope`) when none that does lists every scope, naming the scopes.
   */
  allow(actor: Matchable, subject: Matchable, scopes: readonly string[]): Allowance;
}

interface CompiledRule {
  id: string;
  actor: IdentityMatcher;
  for: IdentityMatcher;
  scopes: ReadonlySet<string>;
  maxTtlSeconds: number;
}

export function compileDelegation(config: Pick<BrokerConfig, 'delegation'>): Delegation {
  const rules: CompiledRule[] = config.delegation.rules.map((rule) => ({
    id: rule.id,
    actor: compileMatch(rule.actor),
    for: compileMatch(rule.for),
    scopes: new Set(rule.scopes),
    maxTtlSeconds: rule.maxTtl === undefined ? Number.POSITIVE_INFINITY : Math.floor(rule.maxTtl / 1000),
  }));

  return {
    maxDepth: config.delegation.maxDepth,
    allow(actor, subject, scopes) {
      const applicable = rules.filter((rule) => rule.actor(actor) && rule.for(subject));
      if (applicable.length === 0) {
        throw new InvalidRequest(`No delegation rule lets ${actor.sub} (issuer "${actor.idp}") act for ${subject.sub} (issuer "${subject.idp}").`);
      }
      const rule = applicable.find((candidate) => scopes.every((scope) => candidate.scopes.has(scope)));
      if (!rule) {
        const unlisted = scopes.filter((scope) => !applicable.some((candidate) => candidate.scopes.has(scope)));
        const named = applicable.map((candidate) => `"${candidate.id}"`).join(', ');
        throw PolicyDenied.scopes(
          unlisted.length > 0 ? unlisted : [...scopes],
          `the delegation rule${applicable.length > 1 ? 's' : ''} ${named} for this actor and subject ${unlisted.length > 0 ? 'do not list them' : 'do not list them together'}`,
        );
      }
      return { rule: rule.id, maxTtlSeconds: rule.maxTtlSeconds };
    },
  };
}

/**
 * RFC 8693 section 4.4: a subject token naming who may act for it (`may_act: {sub, iss?}`) lets
 * only that actor do so, whatever the rules say.
 */
export function checkMayAct(subjectClaims: Readonly<Record<string, unknown>>, actor: Principal): void {
  if (!Object.hasOwn(subjectClaims, 'may_act')) return;
  const mayAct = subjectClaims.may_act as { sub?: unknown; iss?: unknown } | null;
  const named = typeof mayAct === 'object' && mayAct !== null && typeof mayAct.sub === 'string';
  if (!named || mayAct.sub !== actor.sub || (mayAct.iss !== undefined && mayAct.iss !== actor.iss)) {
    throw new InvalidRequest(`The subject token's may_act does not name this actor (${actor.sub}); only the actor it names may act for it.`);
  }
}

/** The `act` claim of a chain given current actor first; undefined for none. */
export function actClaim(actors: readonly Principal[]): ActClaim | undefined {
  return actors.reduceRight<ActClaim | undefined>((inner, actor) => ({ iss: actor.iss, sub: actor.sub, ...(inner ? { act: inner } : {}) }), undefined);
}
