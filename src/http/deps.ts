import type { Logger } from 'pino';
import type { ApprovalService } from '../approval/index.js';
import type { AuditService } from '../audit/index.js';
import type { BreakGlassService } from '../breakglass/index.js';
import type { BrokerConfig } from '../config/index.js';
import type { CredentialService } from '../credentials/index.js';
import type { Metrics } from '../observability/index.js';
import type { SettingsHolder } from '../settings/index.js';
import type { Clock } from '../shared/clock.js';
import type { Store } from '../store/index.js';
import type { Keyring, TokenService } from '../tokens/index.js';
import type { Authenticator } from './auth.js';

/** What the HTTP layer is built from: the services it calls and the little it reads itself. */
export interface AppDeps {
  /** The configuration at start: read here only for what a reload cannot change (issuer, signing). */
  config: BrokerConfig;
  /** The rules in force, which a reload replaces; each request is pinned to those current when it arrives. */
  settings: SettingsHolder;
  auth: Authenticator;
  credentials: CredentialService;
  tokens: TokenService;
  approvals: ApprovalService;
  breakGlass: BreakGlassService;
  audit: AuditService;
  keyring: Keyring;
  store: Store;
  metrics: Metrics;
  logger: Logger;
  clock: Clock;
}
