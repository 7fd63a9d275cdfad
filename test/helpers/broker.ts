import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import request from 'supertest';
import { createBroker, type Broker } from '../../src/broker.js';
import { databaseEngine, parseConfig, type BrokerConfig } from '../../src/config/index.js';
import { createLogger } from '../../src/observability/index.js';
import { createTestDatabase, type TestDatabase } from './engine.js';
import { createTestIssuer, type TestIssuer } from './issuer.js';
import { tempDir } from './temp.js';

export const BROKER_ISSUER = 'http://broker.test';
/** Who started the CI jobs of the usual cast, unless a test says otherwise: nobody else in the cast. */
export const DEFAULT_ACTOR = 'pat';

/** A clock the test moves by hand. */
export interface TestClock {
  (): number;
  advance(ms: number): void;
  set(ms: number): void;
}

export function testClock(start = Date.now()): TestClock {
  let now = start;
  const clock = (() => now) as TestClock;
  clock.advance = (ms) => {
    now += ms;
  };
  clock.set = (ms) => {
    now = ms;
  };
  return clock;
}

/** Real time, which the test may still move ahead (for the scheduler's real ticks). */
export function liveClock(): TestClock {
  let offset = 0;
  const clock = (() => Date.now() + offset) as TestClock;
  clock.advance = (ms) => {
    offset += ms;
  };
  clock.set = (ms) => {
    offset = ms - Date.now();
  };
  return clock;
}

export interface TestIssuers {
  ci: TestIssuer;
  sso: TestIssuer;
}

export async function createTestIssuers(): Promise<TestIssuers> {
  return { ci: await createTestIssuer('https://ci.test'), sso: await createTestIssuer('https://sso.test') };
}

/** This test run's key-encryption key: every broker of the run (in process or not) may share it. */
export const TEST_KEY_ENCRYPTION_KEY = randomBytes(32).toString('base64');

/** Writes a key-encryption key file (mode 0600) into `dir` and returns its path. */
export function writeKeyEncryptionKeyFile(dir: string, key = TEST_KEY_ENCRYPTION_KEY, name = 'key-encryption.key'): string {
  const path = join(dir, name);
  writeFileSync(path, `${key}\n`, { mode: 0o600 });
  return path;
}

/**
 * The signing section as an operator writes it for `database`: on PostgreSQL a key-encryption key
 * is required, and the private keys live sealed in the database; on SQLite, key files.
 */
export function testSigning(dir: string, database: string): Record<string, unknown> {
  const signing = { algorithm: 'ES256', keyDir: join(dir, 'keys'), rotateEvery: '24h' };
  return databaseEngine(database) === 'postgres' ? { ...signing, keyEncryptionKeyFile: writeKeyEncryptionKeyFile(dir) } : signing;
}

const keyCustodyOf = ({ keyDir, keyEncryptionKeyFile }: Record<string, unknown>) => ({ keyDir, ...(keyEncryptionKeyFile ? { keyEncryptionKeyFile } : {}) });

/**
 * A configuration close to a real deployment: a workload issuer (CI) and a person issuer
 * (SSO), low- and high-risk scopes, a toxic pair, roles by SSO group.
 */
export function baseConfig(dir: string, issuers: TestIssuers, database = join(dir, 'broker.db')): Record<string, unknown> {
  return {
    issuer: BROKER_ISSUER,
    database,
    clockSkew: '30s',
    scheduler: { interval: '1s' },
    signing: testSigning(dir, database),
    identity: {
      issuers: [
        {
          name: 'ci',
          kind: 'workload',
          issuer: issuers.ci.iss,
          jwks: issuers.ci.jwks,
          audiences: ['jit-broker'],
          algorithms: ['ES256'],
          maxTokenAge: '1h',
          requiredClaims: ['repository'],
          initiatorClaim: 'actor',
        },
        {
          name: 'sso',
          kind: 'person',
          issuer: issuers.sso.iss,
          jwks: issuers.sso.jwks,
          audiences: ['jit-broker'],
          algorithms: ['ES256'],
          usernameClaim: 'preferred_username',
        },
      ],
    },
    roles: [
      { role: 'approver', match: { issuer: 'sso', claims: { groups: 'approvers' } } },
      { role: 'auditor', match: { issuer: 'sso', claims: { groups: 'auditors' } } },
      { role: 'admin', match: { issuer: 'sso', claims: { groups: 'admins' } } },
      { role: 'introspector', match: { issuer: 'ci', subject: 'resource-server:*' } },
    ],
    scopes: [
      { name: 'artifacts:read', risk: 'low', maxTtl: '15m' },
      { name: 'logs:read', risk: 'low', maxTtl: '15m', breakGlass: { allowed: true } },
      { name: 'model:train', risk: 'low', maxTtl: '30m' },
      {
        name: 'model:deploy',
        risk: 'high',
        maxTtl: '10m',
        approvals: 1,
        approvers: { issuer: 'sso', claims: { groups: 'ml-release' } },
        breakGlass: { allowed: true, maxTtl: '5m' },
      },
      { name: 'db:admin', risk: 'high', maxTtl: '10m', approvals: 2 },
    ],
    policies: [
      { id: 'pipelines', match: { issuer: 'ci', subject: 'repo:acme/*' }, scopes: ['artifacts:read', 'logs:read'] },
      {
        id: 'ml-main',
        match: { issuer: 'ci', subject: 'repo:acme/ml:*', claims: { ref: 'refs/heads/main' } },
        scopes: ['artifacts:read', 'model:train', 'model:deploy'],
        audiences: ['registry.acme.internal'],
        maxTtl: '10m',
      },
      { id: 'dba', match: { issuer: 'ci', subject: 'repo:acme/db:*' }, scopes: ['db:admin'] },
      { id: 'on-call', match: { issuer: 'sso', claims: { groups: 'on-call' } }, scopes: ['logs:read', 'model:deploy'] },
    ],
    separation: [{ name: 'train-vs-deploy', scopes: ['model:train', 'model:deploy'] }],
    approval: { timeout: '1h', collectWithin: '15m' },
    breakGlass: { justificationMinLength: 20, reviewWithin: '24h', maxPerIdentityPerDay: 3 },
  };
}

export interface TestBroker {
  broker: Broker;
  config: BrokerConfig;
  http: ReturnType<typeof request>;
  clock: TestClock;
  issuers: TestIssuers;
  dir: string;
  /** The test's own database (SQLite file or PostgreSQL database), reachable behind the broker's back. */
  db: TestDatabase;
  /** Every log line the broker wrote, as text. */
  logs: string[];
  /** Identity tokens for the usual cast, minted at the clock's now. */
  as: {
    pipeline(claims?: Record<string, unknown>, sub?: string): Promise<string>;
    ml(claims?: Record<string, unknown>): Promise<string>;
    person(sub: string, groups: string[], claims?: Record<string, unknown>): Promise<string>;
  };
  /** Restarts the broker on the same directory and database (and the same clock), its configuration edited by `configure` if given. */
  restart(configure?: (config: Record<string, unknown>) => void): Promise<void>;
  close(): Promise<void>;
}

export interface TestBrokerOptions {
  configure?: (config: Record<string, unknown>) => void;
  /**
   * A whole configuration instead of the usual one (a preset file, say): the test's database and
   * key directory replace its own.
   */
  config?: Record<string, unknown>;
  clock?: TestClock;
  issuers?: TestIssuers;
  fetch?: typeof fetch;
  dir?: string;
  /** Another broker's database (a second replica on it), left for its owner to drop. */
  db?: TestDatabase;
  /** The environment the broker reads its key-encryption key from (none unless given). */
  env?: NodeJS.ProcessEnv;
  /** SQLite's fdatasync of the WAL, for a test that holds it (see `StoreOptions`). */
  datasync?: (fd: number) => Promise<void>;
}

export async function startTestBroker(options: TestBrokerOptions = {}): Promise<TestBroker> {
  const dir = options.dir ?? tempDir('jit-broker-test-');
  const issuers = options.issuers ?? (await createTestIssuers());
  const clock = options.clock ?? testClock();
  const db = options.db ?? (await createTestDatabase(dir));
  const dropDb = () => (options.db ? Promise.resolve() : db.drop());
  const raw = options.config
    ? { ...options.config, database: db.url, signing: { ...(options.config.signing as object), ...keyCustodyOf(testSigning(dir, db.url)) } }
    : baseConfig(dir, issuers, db.url);
  options.configure?.(raw);
  let config = parseConfig('test', raw);
  const logs: string[] = [];
  const logger = createLogger({ level: 'debug', destination: { write: (line: string) => void logs.push(line) } });

  const open = () =>
    createBroker({ config, logger, clock, webhookBackoffMs: 10, env: options.env ?? {}, datasync: options.datasync, ...(options.fetch ? { fetch: options.fetch } : {}) });
  let broker: Broker;
  try {
    broker = await open();
  } catch (error) {
    await dropDb();
    throw error;
  }

  const test: TestBroker = {
    broker,
    config,
    http: request(broker.app),
    clock,
    issuers,
    dir,
    db,
    logs,
    as: {
      // `ci` names its initiator (`actor`), so its tokens must carry one: by default a person
      // who approves nothing here, so that only the tests about initiators meet the rule.
      pipeline: (claims = {}, sub = 'repo:acme/app:ref:refs/heads/main') =>
        issuers.ci.token(sub, { repository: 'acme/app', actor: DEFAULT_ACTOR, ...claims }, { now: clock() }),
      ml: (claims = {}) =>
        issuers.ci.token(
          'repo:acme/ml:ref:refs/heads/main',
          { repository: 'acme/ml', ref: 'refs/heads/main', actor: DEFAULT_ACTOR, ...claims },
          { now: clock() },
        ),
      person: (sub, groups, claims = {}) =>
        issuers.sso.token(sub, { groups, preferred_username: sub, ...claims }, { now: clock() }),
    },
    async restart(configure) {
      await broker.close();
      if (configure) {
        configure(raw);
        config = parseConfig('test', raw);
        test.config = config;
      }
      broker = await open();
      test.broker = broker;
      test.http = request(broker.app);
    },
    async close() {
      await broker.close();
      await dropDb();
      if (!options.dir) rmSync(dir, { recursive: true, force: true });
    },
  };
  return test;
}

/** The broker's log lines that mention `text`. */
export const logsContaining = (logs: string[], text: string) => logs.filter((line) => line.includes(text));

export const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

/** Serves the broker's app on a loopback port, for clients that need a URL. */
export async function listen(t: TestBroker): Promise<{ url: string; close(): Promise<void> }> {
  const { createServer } = await import('node:http');
  const server = createServer(t.broker.app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * Adds an ML release lifecycle to a configuration: one model goes through `train` (the training
 * pipeline, low risk), `register` (the registry job, one approver) and `deploy` (the release
 * pipeline or the on-call people, an ml-release approver), and nobody who took part in one step
 * of a model takes part in another. The toxic pair of the base configuration is dropped, so what
 * refuses is the duty alone.
 */
export function withModelRelease(config: Record<string, any>, within?: string): void {
  config.scopes.push({ name: 'model:register', risk: 'high', maxTtl: '10m', approvals: 1 });
  config.policies.push(
    { id: 'registry', match: { issuer: 'ci', subject: 'repo:acme/registry:*' }, scopes: ['model:register'], identifiers: { model: ['fraud-*', 'Fraud-*', 'churn-*'] } },
    { id: 'release', match: { issuer: 'ci', subject: 'repo:acme/release:*' }, scopes: ['model:deploy'] },
  );
  config.separation = [];
  config.duties = [
    {
      name: 'model-release',
      type: 'model',
      steps: [
        { name: 'train', scopes: ['model:train'] },
        { name: 'register', scopes: ['model:register'] },
        { name: 'deploy', scopes: ['model:deploy'] },
      ],
      ...(within ? { within } : {}),
    },
  ];
}

/** `authorization_details` naming one model. */
export const model = (identifier: string) => [{ type: 'model', identifier }];

/** The agents' issuer of the delegation tests: AI agents and tools, each launched by a person (`owner`). */
export const AGENTS_ISS = 'https://agents.test';

/**
 * Adds agents to a configuration: an issuer of agent identities, engineers of the `ml-eng` group
 * with policies of their own, and delegation rules: release agents act for ml engineers, coding
 * agents for the app pipelines, helper agents (sub-agents) for ml engineers; chains of two actors.
 */
export function withAgents(config: Record<string, any>, agents: TestIssuer): void {
  config.identity.issuers.push({
    name: 'agents',
    kind: 'workload',
    issuer: agents.iss,
    jwks: agents.jwks,
    audiences: ['jit-broker'],
    algorithms: ['ES256'],
    initiatorClaim: 'owner',
  });
  config.policies.push({ id: 'ml-eng', match: { issuer: 'sso', claims: { groups: 'ml-eng' } }, scopes: ['artifacts:read', 'model:deploy'] });
  config.delegation = {
    maxDepth: 2,
    rules: [
      { id: 'release-agent', actor: { issuer: 'agents', subject: 'agent:release-*' }, for: { issuer: 'sso', claims: { groups: 'ml-eng' } }, scopes: ['artifacts:read', 'model:deploy', 'logs:read'], maxTtl: '5m' },
      { id: 'coding-agent', actor: { issuer: 'agents', subject: 'agent:coder-*' }, for: { issuer: 'ci', subject: 'repo:acme/app:*' }, scopes: ['artifacts:read'], maxTtl: '2m' },
      { id: 'helper-agent', actor: { issuer: 'agents', subject: 'agent:helper-*' }, for: { issuer: 'sso', claims: { groups: 'ml-eng' } }, scopes: ['artifacts:read'] },
    ],
  };
}
