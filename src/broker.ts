import type { Express } from 'express';
import type { FetchImplementation } from 'jose';
import type { Logger } from 'pino';
import { createApprovalService, type ApprovalService } from './approval/index.js';
import { createAuditService } from './audit/index.js';
import { createBreakGlassService, type BreakGlassService } from './breakglass/index.js';
import type { BrokerConfig } from './config/index.js';
import { createCredentialService, type CredentialService } from './credentials/index.js';
import { buildApp } from './http/app.js';
import { createAuthenticator } from './http/auth.js';
import { compileRoles, createIdentityVerifier, createPersonResolver, loadTrustedIssuers } from './identity/index.js';
import { createNotifier, type Notifier } from './notify/index.js';
import { createLogger, createMetrics, type Metrics } from './observability/index.js';
import { createJobs, createScheduler, type Scheduler } from './scheduler/index.js';
import { createSettingsHolder, type SettingsHolder } from './settings/index.js';
import { systemClock, type Clock } from './shared/clock.js';
import { openStore, type Store } from './store/index.js';
import { openKeyring, type Keyring } from './tokens/index.js';

export interface BrokerOptions {
  config: BrokerConfig;
  /** Where the configuration came from, for the `config.loaded` audit event. */
  source?: { file: string; sha256: string };
  logger?: Logger;
  clock?: Clock;
  /** The network, injectable: JWKS fetches and webhook deliveries. */
  fetch?: typeof fetch;
  webhookBackoffMs?: number;
}

export interface Broker {
  app: Express;
  config: BrokerConfig;
  store: Store;
  settings: SettingsHolder;
  keyring: Keyring;
  notifier: Notifier;
  scheduler: Scheduler;
  metrics: Metrics;
  credentials: CredentialService;
  approvals: ApprovalService;
  breakGlass: BreakGlassService;
  /** Stops the scheduler, lets webhook deliveries finish, closes the database. */
  close(): Promise<void>;
}

/** Wires the broker from its configuration: the one place that knows every part. */
export async function createBroker(options: BrokerOptions): Promise<Broker> {
  const { config } = options;
  const clock = options.clock ?? systemClock;
  const logger = options.logger ?? createLogger();

  const store = await openStore(config.database, clock);
  try {
    await store.append([
      {
        type: 'config.loaded',
        data: {
          file: options.source?.file ?? null,
          sha256: options.source?.sha256 ?? null,
          issuers: config.identity.issuers.map((issuer) => issuer.name),
          scopes: config.scopes.length,
          policies: config.policies.length,
        },
      },
    ]);
    const keyring = await openKeyring({
      store,
      keyDir: config.signing.keyDir,
      algorithm: config.signing.algorithm,
      rotateEveryMs: config.signing.rotateEvery,
      publishAheadMs: config.signing.publishAhead,
      clock,
    });
    const issuers = await loadTrustedIssuers(config.identity.issuers, {
      ...(options.fetch ? { fetch: options.fetch as FetchImplementation } : {}),
      clock,
    });
    const identity = createIdentityVerifier({
      issuers,
      roles: compileRoles(config.roles),
      persons: createPersonResolver(config),
      clockSkewMs: config.clockSkew,
      clock,
    });
    const settingsHolder = createSettingsHolder(config);
    const settings = settingsHolder.current;
    const metrics = createMetrics(store);
    const notifier = createNotifier({
      config: config.notify,
      // Webhook bodies link to the console's page for the request, when there is a console.
      consoleBase: config.console ? config.issuer : undefined,
      store,
      logger,
      clock,
      ...(options.fetch ? { fetch: options.fetch } : {}),
      ...(options.webhookBackoffMs !== undefined ? { backoffMs: options.webhookBackoffMs } : {}),
    });
    const credentials = createCredentialService({ issuer: config.issuer, settings, store, keyring, notifier, logger, clock });
    const approvals = createApprovalService({ settings, store, notifier, clock });
    const breakGlass = createBreakGlassService({ settings, store, clock });
    const scheduler = createScheduler({
      jobs: createJobs({ store, keyring, notifier, clock, issuer: config.issuer, checkpointEvery: () => settings().config.audit.checkpointEvery }),
      intervalMs: config.scheduler.interval,
      logger,
      metrics,
    });
    const app = buildApp({
      config,
      auth: createAuthenticator(identity, metrics),
      credentials,
      approvals,
      breakGlass,
      audit: createAuditService({ store, clock, keyring, issuer: config.issuer }),
      keyring,
      store,
      metrics,
      logger,
      clock,
    });

    return {
      app,
      config,
      store,
      settings: settingsHolder,
      keyring,
      notifier,
      scheduler,
      metrics,
      credentials,
      approvals,
      breakGlass,
      async close() {
        await scheduler.stop();
        // Deliveries still retrying get a few seconds; the audit log already holds their events.
        await Promise.race([notifier.idle(), new Promise((resolve) => setTimeout(resolve, 5_000).unref())]);
        await store.close();
      },
    };
  } catch (error) {
    await store.close();
    throw error;
  }
}
