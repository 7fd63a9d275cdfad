export {
  claimPathNames,
  configSchema,
  cronForInterval,
  databaseEngine,
  DETAIL_TYPE,
  issuerIss,
  PRIVATE_JWK_REFUSED,
  privateJwkMember,
  SCOPE_NAME,
  SPIFFE_TRUST_DOMAIN,
} from './schema.js';
export type {
  BrokerConfig,
  ClaimPath,
  ClaimPattern,
  ConsoleConfig,
  DelegationRuleConfig,
  DutyConfig,
  IssuerConfig,
  MatchConfig,
  Role,
  ScopeConfig,
  WebhookEvent,
  WebhookFormat,
} from './schema.js';
export { configWarnings } from './warnings.js';
export type { ConfigWarning } from './warnings.js';
export { ALLOW_DEV_ISSUERS_ENV, ConfigError, loadConfig, parseConfig, resolveConfigPath } from './load.js';
export type { LoadedConfig } from './load.js';
