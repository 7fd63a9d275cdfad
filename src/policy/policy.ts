import type { BrokerConfig, ScopeConfig } from '../config/index.js';
import { compileGlob, compileMatch, type IdentityMatcher, type Matchable } from '../identity/match.js';
import type { AuthorizationDetail } from '../shared/authorization-details.js';
import { PolicyDenied } from '../shared/errors.js';

/** What a caller asks for, already validated for shape. */
export interface CredentialAsk {
  scopes: readonly string[];
  audience: string;
  /** Requested lifetime; omitted means the allowed maximum. */
  ttlSeconds?: number | undefined;
  breakGlass: boolean;
  /** The objects the request names (RFC 9396), which a policy's `identifiers` may require. */
  authorizationDetails?: readonly AuthorizationDetail[] | null | undefined;
}

/** The policy's answer when it allows the ask. */
export interface PolicyDecision {
  scopes: string[];
  audience: string;
  /** The effective lifetime: the request's, clamped to the allowed maximum. */
  ttlSeconds: number;
  /** 0 when no approval is needed (every scope low risk, or break-glass). */
  approvalsRequired: number;
  /** The policies that granted the scopes, for the record. */
  policyIds: string[];
}

/** A grant the identity holds now (or may soon: pending and approved requests count). */
export interface LiveGrant {
  requestId: string;
  scopes: readonly string[];
}

export interface SeparationConflict {
  rule: string;
  /** The scopes of the rule that would be held at once. */
  scopes: string[];
  /** The live grant that conflicts; absent when the request alone names two scopes of the rule. */
  requestId?: string;
}

export interface Policy {
  /** Default deny: throws `PolicyDenied` naming every refused scope, or the refused audience. */
  decide(identity: Matchable, ask: CredentialAsk): PolicyDecision;
  scope(name: string): ScopeConfig | undefined;
  /** Matchers narrowing who may approve the given scopes (from each scope's `approvers`). */
  approverRules(scopes: readonly string[]): IdentityMatcher[];
  /** The first `separation` rule that `live` grants plus `requested` would break, if any. */
  separationConflict(requested: readonly string[], live: readonly LiveGrant[]): SeparationConflict | undefined;
  /**
   * The scopes a live grant must not hold for `requested` to be granted: the other scopes of
   * every rule the request touches. Holding a scope of the request itself again is no conflict.
   */
  conflictingScopes(requested: readonly string[]): string[];
}

interface CompiledPolicy {
  id: string;
  matches: IdentityMatcher;
  /** `identifiers`: whether the request's objects are ones this policy grants for. */
  names: (details: readonly AuthorizationDetail[]) => boolean;
  scopes: ReadonlySet<string>;
  audiences?: ReadonlySet<string>;
  maxTtlMs: number;
}

/**
 * A policy's `identifiers` (CONTRACT section 2): for each listed type, the request names at least
 * one entry of it, and every entry of it has an identifier matching one of the type's globs,
 * exactly as sent (an entry without one matches none). A policy without `identifiers` grants
 * whatever the request names.
 */
function compileIdentifiers(identifiers: Readonly<Record<string, readonly string[]>>): (details: readonly AuthorizationDetail[]) => boolean {
  const rules = Object.entries(identifiers).map(([type, globs]) => [type, globs.map(compileGlob)] as const);
  return (details) =>
    rules.every(([type, globs]) => {
      const named = details.filter((detail) => detail.type === type);
      return named.length > 0 && named.every((detail) => detail.identifier !== undefined && globs.some((glob) => glob(detail.identifier as string)));
    });
}

export function compilePolicy(config: Pick<BrokerConfig, 'scopes' | 'policies' | 'separation'>): Policy {
  const scopes = new Map(config.scopes.map((scope) => [scope.name, scope]));
  const approverMatchers = new Map(
    config.scopes.flatMap((scope) => (scope.approvers ? [[scope.name, compileMatch(scope.approvers)] as const] : [])),
  );
  const policies: CompiledPolicy[] = config.policies.map((policy) => ({
    id: policy.id,
    matches: compileMatch(policy.match),
    names: compileIdentifiers(policy.identifiers ?? {}),
    scopes: new Set(policy.scopes),
    ...(policy.audiences ? { audiences: new Set(policy.audiences) } : {}),
    maxTtlMs: policy.maxTtl ?? Number.POSITIVE_INFINITY,
  }));
  const separation = config.separation.map((rule) => ({ name: rule.name, scopes: new Set(rule.scopes) }));

  return {
    decide(identity, ask) {
      const details = ask.authorizationDetails ?? [];
      const forIdentity = policies.filter((policy) => policy.matches(identity));
      const applicable = forIdentity.filter((policy) => policy.names(details));
      const refused: string[] = [];
      const noBreakGlass: string[] = [];
      let audienceRefused = false;
      let maxTtlMs = Number.POSITIVE_INFINITY;
      let approvalsRequired = 0;
      const policyIds = new Set<string>();

      for (const name of ask.scopes) {
        const scope = scopes.get(name);
        const granting = scope ? applicable.filter((policy) => policy.scopes.has(name)) : [];
        if (!scope || granting.length === 0) {
          refused.push(name);
          continue;
        }
        const forAudience = granting.filter((policy) => !policy.audiences || policy.audiences.has(ask.audience));
        if (forAudience.length === 0) {
          audienceRefused = true;
          continue;
        }
        // Where several policies grant a scope, the most generous cap applies; the scope's own cap always does.
        const policyCap = Math.max(...forAudience.map((policy) => policy.maxTtlMs));
        let cap = Math.min(scope.maxTtl, policyCap);
        if (ask.breakGlass) {
          if (!scope.breakGlass?.allowed) noBreakGlass.push(name);
          cap = Math.min(cap, scope.breakGlass?.maxTtl ?? scope.maxTtl);
        }
        maxTtlMs = Math.min(maxTtlMs, cap);
        approvalsRequired = Math.max(approvalsRequired, scope.approvals);
        forAudience.forEach((policy) => policyIds.add(policy.id));
      }

      if (refused.length > 0) {
        // Say so when a policy would grant them, only not for the objects this request names.
        const forOtherObjects = refused.every((name) => forIdentity.some((policy) => policy.scopes.has(name)));
        throw PolicyDenied.scopes(refused, forOtherObjects ? 'no policy grants them to this identity for the objects named (authorization_details)' : 'no policy grants them to this identity');
      }
      if (audienceRefused) throw PolicyDenied.audience(ask.audience);
      if (noBreakGlass.length > 0) throw PolicyDenied.scopes(noBreakGlass, 'break-glass is not allowed for them');

      const maxTtlSeconds = Math.floor(maxTtlMs / 1000);
      return {
        scopes: [...ask.scopes],
        audience: ask.audience,
        ttlSeconds: ask.ttlSeconds === undefined ? maxTtlSeconds : Math.min(ask.ttlSeconds, maxTtlSeconds),
        approvalsRequired: ask.breakGlass ? 0 : approvalsRequired,
        policyIds: [...policyIds],
      };
    },

    scope: (name) => scopes.get(name),

    approverRules: (requested) =>
      requested.flatMap((name) => {
        const matcher = approverMatchers.get(name);
        return matcher ? [matcher] : [];
      }),

    separationConflict(requested, live) {
      for (const rule of separation) {
        const asked = [...new Set(requested.filter((scope) => rule.scopes.has(scope)))];
        if (asked.length === 0) continue;
        if (asked.length >= 2) return { rule: rule.name, scopes: asked };
        for (const grant of live) {
          // Holding the same scope twice is not a toxic combination; holding another of the set is.
          const other = grant.scopes.find((scope) => rule.scopes.has(scope) && !asked.includes(scope));
          if (other !== undefined) return { rule: rule.name, scopes: [...asked, other], requestId: grant.requestId };
        }
      }
      return undefined;
    },

    conflictingScopes(requested) {
      const conflicting = new Set<string>();
      for (const rule of separation) {
        const asked = requested.filter((scope) => rule.scopes.has(scope));
        if (asked.length === 0) continue;
        for (const scope of rule.scopes) if (!asked.includes(scope)) conflicting.add(scope);
      }
      return [...conflicting];
    },
  };
}
