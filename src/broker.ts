import type { Express } from 'express';
import type { FetchImplementation } from 'jose';
import type { Logger } from 'pino';
import { createApprovalService, type ApprovalService } from './approval/index.js';
import { createAuditService } from './audit/index.js';
import { createBreakGlassService, type BreakGlassService } from './breakglass/index.js';
import { ConfigError, configWarnings, type BrokerConfig } from './config/index.js';
import { createCredentialService, type CredentialService } from './credentials/index.js';
import { buildApp } from './http/app.js';
import { createAuthenticator } from './http/auth.js';
import { createNotifier, type Notifier } from './notify/index.js';
import { loadTestedConfig } from './policy-tests/index.js';
import { createLogger, createMetrics, type Metrics } from './observability/index.js';
import { createJobs, createScheduler, type Scheduler } from './scheduler/index.js';
import { compileSettings, createSettingsHolder, type SettingsHolder } from './settings/index.js';
import { systemClock, type Clock } from './shared/clock.js';
import type { ReloadOutcome } from './process/reload.js';
import { openStore, type OnConflict, type Store } from './store/index.js';
import { createTokenService, keyCustody, openKeyring, type Keyring } from './tokens/index.js';

export interface BrokerOptions {
  config: BrokerConfig;
  /** Where the configuration came from, for the `config.loaded` audit event. */
  source?: { file: string; sha256: string };
  logger?: Logger;
  clock?: Clock;
  /** The network, injectable: JWKS fetches and webhook deliveries. */
  fetch?: typeof fetch;
  webhookBackoffMs?: number;
  /** Where the key-encryption key may come from (`BROKER_KEY_ENCRYPTION_KEY`); default process.env. */
  env?: NodeJS.ProcessEnv;
  /** SQLite's fdatasync of its WAL, injectable (see `StoreOptions`). */
  datasync?: (fd: number) => Promise<void>;
}

/** What a reload did: applied the file, or refused it (the running configuration stays), and why. */
/**
 * Settings bound at start to things that live as long as the process: the socket, the database
 * connection, the signing keyring, the scheduler's timers, and the broker's own name in every
 * token and document. A reload that changes one of them is refused whole, saying which: applying
 * the rest would leave the broker running a configuration that is in no file. The console's
 * routes and its sign-in document are built at start too.
 */
export const RESTART_ONLY_SETTINGS = ['issuer', 'listen', 'database', 'signing', 'scheduler', 'audit', 'console'] as const;

export interface Broker {
  app: Express;
  /** The configuration in force: the one loaded at start, or by the last reload applied. */
  readonly config: BrokerConfig;
  store: Store;
  settings: SettingsHolder;
  keyring: Keyring;
  notifier: Notifier;
  scheduler: Scheduler;
  metrics: Metrics;
  credentials: CredentialService;
  approvals: ApprovalService;
  breakGlass: BreakGlassService;
  /**
   * Reads the configuration file again (SIGHUP) with what it points at (`jwksFile`, webhook
   * secret files, `policyTests`), and swaps every rule at once for every later request, recording
   * `config.loaded`; an invalid file, one whose own policy tests fail (the problems name each
   * failing case), or one that changes a restart-only setting, is refused and the running
   * configuration stays. Reloads run one at a time, in the order asked. `env` gives the overrides
   * (PORT, HOST, BROKER_DB) as at start. Without `record`, nothing is recorded: one worker of
   * several has recorded this file already (see process/primary.ts). With `text`, that is the
   * file's text (the one that worker applied), and the file is not read. The outcome is the
   * caller's to log (`logReload` in process/reload.ts).
   */
  reload(file: string, env?: NodeJS.ProcessEnv, options?: { record?: boolean; text?: string | undefined }): Promise<ReloadOutcome>;
  /** Stops the scheduler, lets webhook deliveries finish, closes the database. */
  close(): Promise<void>;
}

/**
 * What the console's sign-in is built from at start, of the person issuer it names (its page,
 * discovery and dev sign-in read it once): restart-only as the `console` section is, or a reload
 * would send people to one issuer and take ID tokens only from another.
 */
function consoleSignIn(config: BrokerConfig) {
  const issuer = config.console && config.identity.issuers.find((candidate) => candidate.name === config.console?.issuer);
  return issuer && { issuer: issuer.issuer, dev: issuer.dev, audiences: issuer.audiences };
}

const loadedEvent = (config: BrokerConfig, source: { file: string; sha256: string } | undefined, trigger: 'start' | 'reload') => ({
  type: 'config.loaded' as const,
  data: {
    file: source?.file ?? null,
    sha256: source?.sha256 ?? null,
    trigger,
    issuers: config.identity.issuers.map((issuer) => issuer.name),
    scopes: config.scopes.length,
    policies: config.policies.length,
  },
});


/** Top-level sections whose value differs (durations compare as parsed, so `60m` equals `1h`). */
const changedSections = (before: BrokerConfig, after: BrokerConfig): string[] =>
  [...new Set([...Object.keys(before), ...Object.keys(after)])].filter(
    (key) => JSON.stringify(before[key as keyof BrokerConfig]) !== JSON.stringify(after[key as keyof BrokerConfig]),
  );

/** Wires the broker from its configuration: the one place that knows every part. */
export async function createBroker(options: BrokerOptions): Promise<Broker> {
  const { config } = options;
  const clock = options.clock ?? systemClock;
  const logger = options.logger ?? createLogger();

  // Before the database: a configuration that cannot keep the keys as promised never touches it.
  const custody = keyCustody(config, options.env ?? process.env, options.source?.file);
  // The metrics read the store, so they come after it; the store's conflicts reach them through this.
  let countConflict: OnConflict = () => {};
  const store = await openStore(config.database, clock, { onConflict: (kind, retried) => countConflict(kind, retried), datasync: options.datasync });
  try {
    // The keyring first: a process given the wrong key-encryption key refuses to start before it
    // records anything, its start included.
    const keyring = await openKeyring({
      store,
      custody,
      algorithm: config.signing.algorithm,
      rotateEveryMs: config.signing.rotateEvery,
      publishAheadMs: config.signing.publishAhead,
      rotationCheckMs: config.scheduler.interval,
      clock,
      logger,
    });
    await store.append([loadedEvent(config, options.source, 'start')]);
    const compileOptions = { clock, fetch: options.fetch as FetchImplementation | undefined };
    const settingsHolder = createSettingsHolder(await compileSettings(config, compileOptions));
    const settings = settingsHolder.current;
    /** The settings a request is judged by: those that verified its caller. */
    const settingsOf = settingsHolder.for;
    const metrics = createMetrics(store);
    countConflict = metrics.storeConflict;
    const { observer } = metrics;
    const notifier = createNotifier({
      settings,
      observer,
      store,
      logger,
      clock,
      ...(options.fetch ? { fetch: options.fetch } : {}),
      ...(options.webhookBackoffMs !== undefined ? { backoffMs: options.webhookBackoffMs } : {}),
    });
    const credentials = createCredentialService({ issuer: config.issuer, settings: settingsOf, store, keyring, notifier, logger, clock, observer });
    const approvals = createApprovalService({ settings: settingsOf, store, notifier, clock, observer });
    const breakGlass = createBreakGlassService({ settings: settingsOf, store, clock });
    const scheduler = createScheduler({
      jobs: createJobs({ store, keyring, notifier, clock, issuer: config.issuer, checkpointEvery: () => settings().config.audit.checkpointEvery, intervalMs: config.scheduler.interval }),
      intervalMs: config.scheduler.interval,
      logger,
      metrics,
    });
    const app = buildApp({
      config,
      settings: settingsHolder,
      auth: createAuthenticator(settingsHolder, metrics),
      credentials,
      tokens: createTokenService({ issuer: config.issuer, store, keyring, clock }),
      approvals,
      breakGlass,
      audit: createAuditService({ store, clock, keyring, issuer: config.issuer, settings: settingsOf }),
      keyring,
      store,
      metrics,
      logger,
      clock,
    });

    let reloads: Promise<unknown> = Promise.resolve();
    const reloadNow = async (file: string, env: NodeJS.ProcessEnv, record: boolean, text: string | undefined): Promise<ReloadOutcome> => {
      const refuse = (problems: string[], at = file): ReloadOutcome => {
        metrics.reloads.inc({ outcome: 'refused' });
        return { status: 'refused', file: at, problems };
      };
      let next;
      try {
        const loaded = loadTestedConfig(file, env, text);
        const fixed: string[] = RESTART_ONLY_SETTINGS.filter((key) => JSON.stringify(loaded.config[key]) !== JSON.stringify(config[key]));
        if (!fixed.includes('console') && JSON.stringify(consoleSignIn(loaded.config)) !== JSON.stringify(consoleSignIn(config))) fixed.push(`identity.issuers.${config.console?.issuer}`);
        if (fixed.length > 0) {
          return refuse(fixed.map((key) => `${key}: cannot change while the broker runs; restart the broker to apply it (or put back the running value to reload the rest)`));
        }
        next = { loaded, settings: await compileSettings(loaded.config, compileOptions) };
      } catch (error) {
        if (error instanceof ConfigError) return refuse(error.problems, error.file);
        return refuse([`cannot be applied: ${(error as Error).message}`]);
      }
      const { loaded } = next;
      try {
        // Recorded before it applies: no request is judged by rules the audit log does not show.
        if (record) await store.append([loadedEvent(loaded.config, { file: loaded.file, sha256: loaded.sha256 }, 'reload')]);
      } catch (error) {
        logger.error({ err: error, file }, 'the reload could not be recorded');
        return refuse(['the config.loaded event could not be recorded'], file);
      }
      const changed = changedSections(settingsHolder.current().config, loaded.config);
      settingsHolder.replace(next.settings);
      metrics.reloads.inc({ outcome: 'applied' });
      return { status: 'applied', file: loaded.file, sha256: loaded.sha256, text: loaded.text, changed, warnings: configWarnings(loaded.config) };
    };

    return {
      app,
      get config() {
        return settingsHolder.current().config;
      },
      store,
      settings: settingsHolder,
      keyring,
      notifier,
      scheduler,
      metrics,
      credentials,
      approvals,
      breakGlass,
      reload(file, env = process.env, { record = true, text } = {}) {
        const outcome = reloads.then(() => reloadNow(file, env, record, text));
        reloads = outcome.catch(() => {});
        return outcome;
      },
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
