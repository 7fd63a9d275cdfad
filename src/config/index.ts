export { configSchema, cronForInterval, ROLES, SCOPE_NAME, WEBHOOK_EVENTS } from './schema.js';
export type { BrokerConfig, IssuerConfig, MatchConfig, PolicyConfig, Role, ScopeConfig, WebhookEvent } from './schema.js';
export { ConfigError, DEFAULT_CONFIG_PATH, loadConfig, parseConfig, resolveConfigPath } from './load.js';
export type { LoadedConfig } from './load.js';
