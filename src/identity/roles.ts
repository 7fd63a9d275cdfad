import type { BrokerConfig, Role } from '../config/index.js';
import { PolicyDenied } from '../shared/errors.js';
import { compileMatch, type Matchable } from './match.js';

export type RoleResolver = (identity: Matchable & { kind: 'workload' | 'person' }) => ReadonlySet<Role>;

/**
 * Roles come from `roles` rules. A workload may only ever be an `introspector`: the config
 * refuses other rules for workload issuers, and this check keeps that true whatever the config.
 */
export function compileRoles(rules: BrokerConfig['roles']): RoleResolver {
  const compiled = rules.map((rule) => ({ role: rule.role, matches: compileMatch(rule.match) }));
  return (identity) => {
    const roles = new Set<Role>();
    for (const rule of compiled) {
      if (identity.kind === 'workload' && rule.role !== 'introspector') continue; // defence in depth
      if (rule.matches(identity)) roles.add(rule.role);
    }
    return roles;
  };
}

export function requireRole(identity: { roles: ReadonlySet<Role> }, ...roles: Role[]): void {
  if (!roles.some((role) => identity.roles.has(role))) throw PolicyDenied.role(roles);
}
