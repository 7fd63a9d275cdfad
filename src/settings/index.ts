import type { BrokerConfig } from '../config/index.js';
import { compilePolicy, type Policy } from '../policy/index.js';

/**
 * What a request is judged by: the configuration and the policy compiled from it. Services read
 * it once per request through `current()`, so a reload (SIGHUP) swaps it as one value and every
 * later request sees all of the new rules and none of the old.
 */
export interface Settings {
  config: BrokerConfig;
  policy: Policy;
}

export interface SettingsHolder {
  current(): Settings;
  replace(config: BrokerConfig): Settings;
}

export function compileSettings(config: BrokerConfig): Settings {
  return { config, policy: compilePolicy(config) };
}

export function createSettingsHolder(config: BrokerConfig): SettingsHolder {
  let settings = compileSettings(config);
  return {
    current: () => settings,
    replace(next) {
      settings = compileSettings(next);
      return settings;
    },
  };
}
