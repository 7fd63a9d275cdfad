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
  /**
   * Per scope, the first policy in configuration order that granted it: what the issuance
   * records, and what `GET /v1/audit/entitlements` counts it under.
   */
  grantedBy: Readonly<Record<string, string>>;
}

/** One (policy, scope) the configuration grants. */
export interface Grant {
  policy: string;
  scope: string;
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
  /**
   * How the policies stand on each scope of an ask, as `decide` reads them, for a person to read
   * (`jit policy explain`): never throws, refusals included.
   */
  explain(identity: Matchable, ask: CredentialAsk): PolicyExplanation;
  /** Every (policy, scope) the configuration grants, policies in configuration order, each policy's scopes in its order. */
  grants(): readonly Grant[];
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

/** Where a scope's lifetime cap comes from: the smallest of these. */
export type CapSource = { kind: 'scope' } | { kind: 'policy'; policy: string } | { kind: 'break-glass' };

/** A policy matching the identity and listing a scope, and whether it grants it to this ask. */
export interface PolicyStand {
  policy: string;
  /** `identifiers`: not for the objects named; `audience`: not for this audience. */
  grants: true | 'identifiers' | 'audience';
  /** The policy's own `maxTtl`, in seconds, when it has one. */
  maxTtlSeconds?: number;
}

export interface ScopeExplanation {
  scope: string;
  /** The scope's configuration; undefined when no scope has this name. */
  config: ScopeConfig | undefined;
  /** Policies matching the identity that list the scope, in configuration order. */
  policies: PolicyStand[];
  /** The policy the grant is recorded under: the first that grants, in configuration order. */
  grantedBy?: string;
  /** The lifetime cap of this scope under the granting policies (and break-glass), where granted. */
  cap?: { seconds: number; from: CapSource };
}

export interface PolicyExplanation {
  /** Every policy whose `match` takes the identity, in configuration order. */
  matching: string[];
  scopes: ScopeExplanation[];
  /** The `separation` rules holding a requested scope, with their other scopes. */
  separation: { rule: string; scopes: string[] }[];
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
  const grants: readonly Grant[] = config.policies.flatMap((policy) => [...new Set(policy.scopes)].map((scope) => ({ policy: policy.id, scope })));

  /**
   * How the policies stand on one scope for one identity: those that list it, those of them that
   * grant it for the objects named, and those that grant it for the audience too (the grant), each
   * in configuration order. `decide` and `explain` both read it, so they never disagree.
   */
  const standing = (name: string, forIdentity: readonly CompiledPolicy[], details: readonly AuthorizationDetail[], audience: string) => {
    const scope = scopes.get(name);
    const listing = scope ? forIdentity.filter((policy) => policy.scopes.has(name)) : [];
    const forObjects = listing.filter((policy) => policy.names(details));
    const granting = forObjects.filter((policy) => !policy.audiences || policy.audiences.has(audience));
    return { scope, listing, forObjects, granting };
  };

  /** A granted scope's lifetime cap, and where it comes from. */
  const capOf = (scope: ScopeConfig, granting: readonly CompiledPolicy[], breakGlass: boolean): { ms: number; from: CapSource } => {
    // Where several policies grant a scope, the most generous cap applies; the scope's own cap always does.
    const generous = granting.reduce<CompiledPolicy | undefined>((best, policy) => (!best || policy.maxTtlMs > best.maxTtlMs ? policy : best), undefined);
    let cap: { ms: number; from: CapSource } = { ms: scope.maxTtl, from: { kind: 'scope' } };
    if (generous && generous.maxTtlMs < cap.ms) cap = { ms: generous.maxTtlMs, from: { kind: 'policy', policy: generous.id } };
    const breakGlassCap = scope.breakGlass?.maxTtl ?? scope.maxTtl;
    if (breakGlass && breakGlassCap < cap.ms) cap = { ms: breakGlassCap, from: { kind: 'break-glass' } };
    return cap;
  };

  return {
    decide(identity, ask) {
      const details = ask.authorizationDetails ?? [];
      const forIdentity = policies.filter((policy) => policy.matches(identity));
      const refused: string[] = [];
      const forOtherObjects: string[] = [];
      const noBreakGlass: string[] = [];
      let audienceRefused = false;
      let maxTtlMs = Number.POSITIVE_INFINITY;
      let approvalsRequired = 0;
      const policyIds = new Set<string>();
      const grantedBy: Record<string, string> = {};

      for (const name of ask.scopes) {
        const { scope, listing, forObjects, granting } = standing(name, forIdentity, details, ask.audience);
        if (!scope || forObjects.length === 0) {
          refused.push(name);
          if (listing.length > 0) forOtherObjects.push(name);
          continue;
        }
        if (granting.length === 0) {
          audienceRefused = true;
          continue;
        }
        if (ask.breakGlass && !scope.breakGlass?.allowed) noBreakGlass.push(name);
        maxTtlMs = Math.min(maxTtlMs, capOf(scope, granting, ask.breakGlass).ms);
        approvalsRequired = Math.max(approvalsRequired, scope.approvals);
        granting.forEach((policy) => policyIds.add(policy.id));
        grantedBy[name] = (granting[0] as CompiledPolicy).id;
      }

      if (refused.length > 0) {
        // Say so when a policy would grant them, only not for the objects this request names.
        const why = forOtherObjects.length === refused.length ? 'no policy grants them to this identity for the objects named (authorization_details)' : 'no policy grants them to this identity';
        throw PolicyDenied.scopes(refused, why);
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
        grantedBy,
      };
    },

    explain(identity, ask) {
      const details = ask.authorizationDetails ?? [];
      const forIdentity = policies.filter((policy) => policy.matches(identity));
      return {
        matching: forIdentity.map((policy) => policy.id),
        scopes: ask.scopes.map((name) => {
          const { scope, listing, forObjects, granting } = standing(name, forIdentity, details, ask.audience);
          const cap = scope && granting.length > 0 ? capOf(scope, granting, ask.breakGlass) : undefined;
          return {
            scope: name,
            config: scope,
            policies: listing.map((policy) => ({
              policy: policy.id,
              grants: granting.includes(policy) ? true : forObjects.includes(policy) ? 'audience' : 'identifiers',
              ...(Number.isFinite(policy.maxTtlMs) ? { maxTtlSeconds: Math.floor(policy.maxTtlMs / 1000) } : {}),
            })),
            ...(granting[0] ? { grantedBy: granting[0].id } : {}),
            ...(cap ? { cap: { seconds: Math.floor(cap.ms / 1000), from: cap.from } } : {}),
          };
        }),
        separation: separation
          .filter((rule) => ask.scopes.some((scope) => rule.scopes.has(scope)))
          .map((rule) => ({ rule: rule.name, scopes: [...rule.scopes] })),
      };
    },

    grants: () => grants,

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
