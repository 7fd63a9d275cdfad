import type { FetchImplementation } from 'jose';
import type { BrokerConfig } from '../config/index.js';
import {
  compileRoles,
  createIdentityVerifier,
  createPeople,
  loadTrustedIssuers,
  type IdentityVerifier,
  type People,
  type RoleResolver,
} from '../identity/index.js';
import { compileDelegation, type Delegation } from '../delegation/index.js';
import { compileDuties, type Duties } from '../duties/index.js';
import { compileWebhooks, type Webhook } from '../notify/index.js';
import { compilePolicy, type Policy } from '../policy/index.js';
import type { Clock } from '../shared/clock.js';

/**
 * What a request is judged by, compiled from one configuration file: the configuration itself,
 * the policy, the identity verifier (trusted issuers and their keys, roles, person keys) and the
 * webhooks with their secrets. A reload (SIGHUP) swaps all of it as one value, so no request ever
 * sees the new roles with the old policy, or the old issuers with the new webhooks.
 */
export interface Settings extends Rules {
  identity: IdentityVerifier;
  webhooks: readonly Webhook[];
}

/**
 * The rules of one configuration, compiled, with nothing read from outside it (no keys, no
 * secret files): what decides a request once its identity is known. `jit policy test` judges
 * its cases by exactly these.
 */
export interface Rules {
  config: BrokerConfig;
  policy: Policy;
  duties: Duties;
  delegation: Delegation;
  roles: RoleResolver;
  /** Who the person behind each recorded key is, under this configuration's aliases. */
  people: People;
}

export interface SettingsHolder {
  /** The latest settings: those a request that starts now is judged by. */
  current(): Settings;
  /**
   * The settings that verified `caller` (see `bind`), else the latest. A request is judged by
   * the settings that verified its caller, however long it takes: a reload in the middle of a
   * request never mixes the old roles with the new policy.
   */
  for(caller?: object): Settings;
  /** Records that `settings` verified `caller`. */
  bind(caller: object, settings: Settings): void;
  /** Makes `next` the settings of every request that starts from now on. */
  replace(next: Settings): void;
}

export interface CompileOptions {
  clock: Clock;
  /** The network, injectable: remote JWKS fetches. */
  fetch?: FetchImplementation | undefined;
}

/**
 * Compiles a configuration into settings, reading what it points at now: `jwksFile` and
 * inline key sets, development issuers' keys, webhook secret files. Remote key sets are fetched
 * on first use. Throws `ConfigError` when a file it needs is missing, exposed or malformed.
 */
export async function compileSettings(config: BrokerConfig, options: CompileOptions): Promise<Settings> {
  const issuers = await loadTrustedIssuers(config.identity.issuers, {
    clock: options.clock,
    ...(options.fetch ? { fetch: options.fetch } : {}),
  });
  const rules = compileRules(config);
  return {
    ...rules,
    identity: createIdentityVerifier({ issuers, roles: rules.roles, people: rules.people, clockSkewMs: config.clockSkew, clock: options.clock }),
    webhooks: compileWebhooks(config.notify),
  };
}

/** A configuration's rules, compiled once (see `Rules`). */
export function compileRules(config: BrokerConfig): Rules {
  return {
    config,
    policy: compilePolicy(config),
    duties: compileDuties(config),
    delegation: compileDelegation(config),
    roles: compileRoles(config.roles),
    people: createPeople(config),
  };
}

export function createSettingsHolder(initial: Settings): SettingsHolder {
  let latest = initial;
  // Keyed by the verified identity, which lives as long as its request: no bookkeeping to clean up.
  // (An AsyncLocalStorage would do it for every promise of every request, at a cost in CPU.)
  const verifiedBy = new WeakMap<object, Settings>();
  return {
    current: () => latest,
    for: (caller) => (caller && verifiedBy.get(caller)) ?? latest,
    bind: (caller, settings) => void verifiedBy.set(caller, settings),
    replace(next) {
      latest = next;
    },
  };
}
