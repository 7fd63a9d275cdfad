import { availableParallelism } from 'node:os';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exportJWK, generateKeyPair } from 'jose';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { ConfigError, configWarnings, databaseEngine, loadConfig, parseConfig, resolveConfigPath } from '../../src/config/index.js';
import { loadTrustedIssuers } from '../../src/identity/index.js';
import { baseConfig, bearer, createTestIssuers, startTestBroker, type TestIssuers } from '../helpers/broker.js';
import { tempDir } from '../helpers/temp.js';

const dir = tempDir('jit-config-test-');
const write = (name: string, content: unknown) => {
  const path = join(dir, name);
  writeFileSync(path, typeof content === 'string' ? content : YAML.stringify(content));
  return path;
};
const problemsOf = (path: string): string[] => {
  try {
    loadConfig(path);
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  throw new Error('expected the configuration to be refused');
};

describe('configuration', () => {
  it('ships a development default that loads, and says what it is', () => {
    const { config } = loadConfig('config/broker.yaml');
    expect(config.identity.issuers.filter((issuer) => issuer.dev).map((issuer) => issuer.name)).toEqual(['dev-ci', 'dev-sso', 'dev-agents']);
    expect(config.listen).toEqual({ host: '127.0.0.1', port: 8080, workers: availableParallelism(), requestTimeout: 20_000 });
    expect(config.clockSkew).toBe(30_000);
  });

  it('refuses an invalid file with one line per bad field', async () => {
    const config = baseConfig(dir, await createTestIssuers()) as Record<string, any>;
    config.clockSkew = 'soon';
    config.bogus = true;
    config.identity.issuers[0].algorithms = ['HS256'];
    config.identity.issuers[1].jwksUri = 'http://sso.example.com/jwks';
    delete config.identity.issuers[1].jwks;
    config.identity.issuers[0].issuer = config.issuer;
    config.roles.push({ role: 'approver', match: { issuer: 'ci' } });
    config.policies[0].scopes.push('no:such-scope');
    config.scopes[0].name = 'Not A Scope';
    expect(problemsOf(write('bad.yaml', config))).toEqual(
      expect.arrayContaining([
        'clockSkew: "soon" is not a duration such as 30s, 15m, 1h or 7d',
        'bogus: unknown field',
        'identity.issuers.0.algorithms.0: must be one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA, Ed25519 (never none, never an HMAC algorithm)',
        'identity.issuers.1.jwksUri: must be an https URL (plain http only for loopback hosts)',
        'scopes.0.name: must match [a-z0-9][a-z0-9:._/-]{0,127}',
      ]),
    );
    // Cross-field rules are judged alongside a bad field elsewhere (here listen.port), so one
    // start names every fault; a section that is itself malformed (scopes above) suspends them.
    const second = baseConfig(dir, await createTestIssuers()) as Record<string, any>;
    second.listen = { port: 70000 };
    second.identity.issuers.push({ ...second.identity.issuers[1], name: 'sso-again' });
    second.identity.issuers[0].issuer = second.issuer;
    second.roles.push({ role: 'approver', match: { issuer: 'ci' } });
    second.policies[0].scopes.push('no:such-scope');
    second.separation.push({ name: 'x', scopes: ['artifacts:read', 'ghost'] });
    expect(problemsOf(write('bad2.yaml', second))).toEqual([
      'listen.port: Too big: expected number to be <=65535',
      'identity.issuers.0.issuer: the broker\'s own issuer can never be a trusted identity issuer',
      `identity.issuers.${second.identity.issuers.length - 1}.issuer: duplicate issuer "${second.identity.issuers[1].issuer}": the same URL as issuer "sso" (letter case, default port, a trailing dot or slash and escaped unreserved characters aside); one entry per iss`,
      'roles.4.match.issuer: "ci" is a workload issuer; this needs a person issuer',
      'policies.0.scopes.2: no scope is named "no:such-scope"',
      'separation.1.scopes.1: no scope is named "ghost"',
    ]);
  });

  it('refuses token lifetimes under a second, which would mint tokens already expired', async () => {
    const config = baseConfig(dir, await createTestIssuers()) as Record<string, any>;
    config.scopes[0].maxTtl = '500ms';
    config.policies[0].maxTtl = '0.5s';
    expect(problemsOf(write('short.yaml', config))).toEqual([
      'scopes.0.maxTtl: "500ms" is shorter than 1 second',
      'policies.0.maxTtl: "0.5s" is shorter than 1 second',
    ]);
  });

  it('refuses durations past what a time or a timer can hold, naming each field', async () => {
    const config = baseConfig(dir, await createTestIssuers()) as Record<string, any>;
    config.approval = { timeout: '999999999d' };
    config.scopes[0].maxTtl = '3651d';
    config.identity.issuers[0].jwksTimeout = '25d';
    config.notify = { timeout: '25d', webhooks: [] };
    config.listen = { requestTimeout: '25d' };
    expect(problemsOf(write('long.yaml', config))).toEqual([
      'listen.requestTimeout: "25d" is longer than 24 days',
      'identity.issuers.0.jwksTimeout: "25d" is longer than 24 days',
      'scopes.0.maxTtl: "3651d" is longer than 3650 days',
      'approval.timeout: "999999999d" is longer than 3650 days',
      'notify.timeout: "25d" is longer than 24 days',
    ]);
  });

  it('refuses a requestTimeout under a second, which would drop every caller', async () => {
    const config = baseConfig(dir, await createTestIssuers()) as Record<string, any>;
    config.listen = { requestTimeout: '500ms' };
    expect(problemsOf(write('short.yaml', config))).toEqual(['listen.requestTimeout: "500ms" is shorter than 1 second']);
  });

  it('serves every request at the longest durations it accepts', async () => {
    const t = await startTestBroker({
      configure(config) {
        config.approval = { timeout: '3650d', collectWithin: '3650d' };
        config.breakGlass = { reviewWithin: '3650d' };
        (config.identity as { issuers: Record<string, any>[] }).issuers.forEach((issuer) => (issuer.jwksTimeout = '24d'));
        (config.scopes as Record<string, any>[]).forEach((scope) => (scope.maxTtl = '3650d'));
      },
    });
    try {
      const pending = await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send({ task_id: 't', scopes: ['model:deploy'], audience: 'registry.acme.internal', justification: 'release 7' });
      expect(pending.status).toBe(202);
      const glass = await t.http.post('/v1/credentials').set(bearer(await t.as.person('olga', ['on-call']))).send({ task_id: 'i', scopes: ['logs:read'], audience: 'logs', break_glass: true, justification: 'registry down since 03:10, rolling back' });
      expect(glass.status).toBe(201);
      const approver = await t.as.person('alice', ['approvers', 'ml-release']);
      expect((await t.http.get('/v1/approvals').set(bearer(approver))).status).toBe(200);
      expect((await t.http.get('/v1/break-glass?review=pending').set(bearer(approver))).status).toBe(200);
      expect((await t.http.get('/v1/credentials').set(bearer(await t.as.ml()))).status).toBe(200);
    } finally {
      await t.close();
    }
  });

  it('refuses a broker issuer with a query, a fragment or white space (RFC 8414)', async () => {
    for (const issuer of ['https://broker.example/?tenant=a', 'https://broker.example/#x', 'https://broker.example/a b']) {
      const config = baseConfig(dir, await createTestIssuers()) as Record<string, any>;
      config.issuer = issuer;
      expect(problemsOf(write('issuer.yaml', config))).toEqual(['issuer: must be a URL without a query, a fragment or white space (RFC 8414 section 2)']);
    }
  });

  it('names YAML syntax errors and missing files', () => {
    expect(problemsOf(write('syntax.yaml', 'issuer: [unclosed'))[0]).toMatch(/^not valid YAML: /);
    expect(problemsOf(join(dir, 'missing.yaml'))).toEqual(['cannot read the file (ENOENT)']);
  });

  it('takes PORT, HOST and BROKER_DB from the environment over the file', async () => {
    const path = write('env.yaml', baseConfig(dir, await createTestIssuers()));
    const { config } = loadConfig(path, { PORT: '9999', HOST: '0.0.0.0', BROKER_DB: '/tmp/other.db' });
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 9999, workers: availableParallelism(), requestTimeout: 20_000 });
    expect(config.database).toBe('/tmp/other.db');
    expect(() => loadConfig(path, { PORT: 'eighty' })).toThrow(ConfigError);
  });

  it('names the variable when a value the environment gave is refused, and takes only a host name or address for HOST', async () => {
    const path = write('env.yaml', baseConfig(dir, await createTestIssuers()));
    const refusal = (env: NodeJS.ProcessEnv) => {
      try {
        loadConfig(path, env);
      } catch (error) {
        if (error instanceof ConfigError) return error.problems;
        throw error;
      }
      return [];
    };
    expect(refusal({ PORT: 'eighty' })).toEqual(['listen.port (from env PORT): Invalid input: expected number, received string']);
    expect(refusal({ HOST: 'local\u0007host' })).toEqual(['listen.host (from env HOST): must be an IP address or a host name']);
    expect(refusal({ BROKER_DB: 'postgres:/x' })).toEqual(['database (from env BROKER_DB): is not a valid postgres:// URL (postgres:// or postgresql://, then the host)']);
    for (const host of ['localhost', '0.0.0.0', '::', '::1', 'broker.internal', '10.1.2.3']) expect(refusal({ HOST: host })).toEqual([]);
  });

  it('runs a worker per core unless told how many', async () => {
    const workers = (value: unknown) => {
      const config = baseConfig(dir, issuers) as Record<string, any>;
      config.listen = { port: 0, ...(value === undefined ? {} : { workers: value }) };
      return parseConfig('test', config).listen.workers;
    };
    const issuers = await createTestIssuers();
    expect(workers(undefined)).toBe(availableParallelism());
    expect(workers('auto')).toBe(availableParallelism());
    expect(workers(3)).toBe(3);
    for (const bad of [0, 65, 1.5, 'all', '2']) expect(() => workers(bad), String(bad)).toThrow(/listen\.workers/);
  });

  it('finds the file from --config, then BROKER_CONFIG, then the default', () => {
    expect(resolveConfigPath(['--config', 'a.yaml'], { BROKER_CONFIG: 'b.yaml' })).toBe('a.yaml');
    expect(resolveConfigPath(['--config=a.yaml'], {})).toBe('a.yaml');
    expect(resolveConfigPath([], { BROKER_CONFIG: 'b.yaml' })).toBe('b.yaml');
    expect(resolveConfigPath([], {})).toBe('config/broker.yaml');
  });
});

/** CONTRACT section 2, the fields of 2026-12-01: defaults, and every start-up refusal by the field it names. */
describe('configuration: people, SPIFFE, limits and the other new fields', () => {
  let issuers: TestIssuers;
  const config = async (edit: (c: Record<string, any>) => void = () => {}) => {
    issuers ??= await createTestIssuers();
    const raw = baseConfig(dir, issuers) as Record<string, any>;
    edit(raw);
    return raw;
  };
  const problems = async (edit: (c: Record<string, any>) => void): Promise<string[]> => {
    try {
      parseConfig('test', await config(edit));
    } catch (error) {
      if (error instanceof ConfigError) return error.problems;
      throw error;
    }
    throw new Error('expected the configuration to be refused');
  };
  const spire = (name: string, more: Record<string, unknown> = {}) => ({
    name,
    kind: 'workload',
    spiffeTrustDomain: 'example.org',
    jwks: issuers.ci.jwks,
    audiences: ['jit-broker'],
    algorithms: ['ES256'],
    ...more,
  });

  it('gives every new field its default, so an older file still loads', async () => {
    const parsed = parseConfig('test', await config());
    expect(parsed.people).toEqual([]);
    expect(parsed.limits).toEqual({ requestsPerMinute: 600, liveGrants: 1000, pendingRequests: 20 });
    expect(parsed.audit).toEqual({ checkpointEvery: 3_600_000 });
    expect(parsed.signing.publishAhead).toBe(600_000);
    const hooked = parseConfig('test', await config((c) => (c.notify = { webhooks: [{ url: 'https://hooks.example/b', events: ['audit.checkpoint'] }] })));
    expect(hooked.notify.webhooks[0]).toMatchObject({ format: 'json', events: ['audit.checkpoint'] });
  });

  it('reads every new field as written', async () => {
    const parsed = parseConfig(
      'test',
      await config((c) => {
        c.database = 'postgresql://broker@db.internal:5432/jit';
        c.signing.publishAhead = '30m';
        c.limits = { requestsPerMinute: 60, liveGrants: 10, pendingRequests: 2 };
        c.audit = { checkpointEvery: '15m' };
        c.notify = { webhooks: [{ url: 'https://hooks.example/b', events: ['approval.requested'], format: 'slack' }] };
        c.identity.issuers[0].bindClaims = ['run_id', ['kubernetes.io', 'pod', 'uid']];
        c.identity.issuers[0].requiredClaims = ['repository', ['kubernetes.io', 'namespace']];
        c.identity.issuers.push(spire('spire'));
        c.people = [{ name: 'Bob', aliases: [{ issuer: 'ci', username: 'bob-gh' }, { issuer: 'sso', username: 'bob@acme.com' }] }];
      }),
    );
    expect(parsed.database).toBe('postgresql://broker@db.internal:5432/jit');
    expect(databaseEngine(parsed.database)).toBe('postgres');
    expect(databaseEngine('./data/broker.db')).toBe('sqlite');
    expect(parsed.signing.publishAhead).toBe(30 * 60_000);
    expect(parsed.limits).toEqual({ requestsPerMinute: 60, liveGrants: 10, pendingRequests: 2 });
    expect(parsed.audit.checkpointEvery).toBe(15 * 60_000);
    expect(parsed.notify.webhooks[0]?.format).toBe('slack');
    expect(parsed.identity.issuers[0]?.bindClaims).toEqual(['run_id', ['kubernetes.io', 'pod', 'uid']]);
    expect(parsed.identity.issuers[0]?.requiredClaims).toEqual(['repository', ['kubernetes.io', 'namespace']]);
    expect(parsed.identity.issuers[2]).toMatchObject({ name: 'spire', spiffeTrustDomain: 'example.org' });
    expect(parsed.identity.issuers[2]?.issuer).toBeUndefined();
    expect(parsed.people).toEqual([{ name: 'Bob', aliases: [{ issuer: 'ci', username: 'bob-gh' }, { issuer: 'sso', username: 'bob@acme.com' }] }]);
  });

  it('takes match claims as nested maps, numbers and booleans as their JSON text', async () => {
    const parsed = parseConfig(
      'test',
      await config((c) => {
        c.policies[0].match.claims = { 'kubernetes.io': { namespace: 'prod', serviceaccount: { name: 'deployer' } }, run_attempt: 1, fork: false };
      }),
    );
    expect(parsed.policies[0]?.match.claims).toEqual({
      'kubernetes.io': { namespace: 'prod', serviceaccount: { name: 'deployer' } },
      run_attempt: '1',
      fork: 'false',
    });
    expect(await problems((c) => (c.policies[0].match.claims = { 'kubernetes.io': {} }))).toEqual([
      'policies.0.match.claims.kubernetes.io: an empty map would match any object; name its members',
    ]);
  });

  it('refuses a step\'s former name that names a step of its duty, now or formerly', async () => {
    const duty = (steps: object[]) => (c: Record<string, any>) => (c.duties = [{ name: 'model-release', type: 'model', steps }]);
    expect(await problems(duty([{ name: 'train', scopes: ['model:train'] }, { name: 'release', scopes: ['model:deploy'], formerly: ['train'] }]))).toEqual([
      'duties.0.steps.1.formerly.0: "train" already names a step of duty "model-release"',
    ]);
    expect(await problems(duty([{ name: 'train', scopes: ['model:train'], formerly: ['old'] }, { name: 'release', scopes: ['model:deploy'], formerly: ['old'] }]))).toEqual([
      'duties.0.steps.1.formerly.0: "old" already names a step of duty "model-release"',
    ]);
    expect(parseConfig('test', await config(duty([{ name: 'train', scopes: ['model:train'] }, { name: 'release', scopes: ['model:deploy'], formerly: ['deploy'] }]))).duties[0]?.steps[1]?.formerly).toEqual(['deploy']);
  });

  it('refuses a duty without two steps or a type, a type of two duties, a step scope that is no scope or already another step, identifiers of a type no duty has', async () => {
    const duties = (...list: object[]) => (c: Record<string, any>) => (c.duties = list);
    const train = { name: 'train', scopes: ['model:train'] };
    const deploy = { name: 'deploy', scopes: ['model:deploy'] };
    expect(await problems(duties({ name: 'model-release', type: 'model', steps: [] }))).toEqual(['duties.0.steps: a duty separates steps: name at least two']);
    expect(await problems(duties({ name: 'model-release', type: 'model', steps: [train] }))).toEqual(['duties.0.steps: a duty separates steps: name at least two']);
    expect((await problems(duties({ name: 'model-release', steps: [train, deploy] })))[0]).toMatch(/^duties\.0\.type: /);
    expect(await problems(duties({ name: 'model-release', type: 'model', steps: [train, deploy] }, { name: 'model-audit', type: 'model', steps: [{ name: 'a', scopes: ['logs:read'] }, { name: 'b', scopes: ['artifacts:read'] }] }))).toEqual([
      'duties.1.type: type "model" is already duties.0\'s; one duty per type',
    ]);
    expect(await problems(duties({ name: 'model-release', type: 'model', steps: [train, { name: 'ghost', scopes: ['model:ghost'] }] }))).toEqual(['duties.0.steps.1.scopes.0: no scope is named "model:ghost"']);
    expect(await problems(duties({ name: 'model-release', type: 'model', steps: [train, { name: 'again', scopes: ['model:train'] }] }))).toEqual([
      'duties.0.steps.1.scopes.0: scope "model:train" is already step "train" of duty "model-release"; a scope belongs to one step of one duty',
    ]);
    expect(await problems(duties({ name: 'model-release', type: 'model', steps: [train, deploy] }, { name: 'data', type: 'dataset', steps: [{ name: 'a', scopes: ['model:train'] }, { name: 'b', scopes: ['logs:read'] }] }))).toEqual([
      'duties.1.steps.0.scopes.0: scope "model:train" is already step "train" of duty "model-release"; a scope belongs to one step of one duty',
    ]);
    expect(
      await problems((c) => {
        duties({ name: 'model-release', type: 'model', steps: [train, deploy] })(c);
        c.policies[0].identifiers = { dataset: ['x'] };
      }),
    ).toEqual(['policies.0.identifiers.dataset: no duty has the type "dataset"']);
  });

  it('refuses a claim value written as a whole number past 2^53 - 1, which YAML reads as another number', async () => {
    // 12345678901234567890 reads as 12345678901234567000, which other repositories' ids would match.
    const path = write('big-number.yaml', `${YAML.stringify(await config())}`.replace(/^policies:\n/m, 'policies:\n  - id: big\n    match: { issuer: ci, claims: { repository_id: 12345678901234567890 } }\n    scopes: [logs:read]\n'));
    expect(problemsOf(path)).toEqual(['policies.0.match.claims.repository_id: a whole number past 2^53 - 1 loses digits as it is read: write it in quotes, as text']);
    const quoted = write('big-text.yaml', readFileSync(path, 'utf8').replace('12345678901234567890', '"12345678901234567890"'));
    expect(loadConfig(quoted).config.policies[0]?.match.claims).toEqual({ repository_id: '12345678901234567890' });
  });

  it('refuses two keys that read as one member (1 and "1", true and "true"): the last would win unseen', async () => {
    for (const [first, second] of [['1', '"1"'], ['true', '"true"'], ['null', '"null"']]) {
      const path = write('twice.yaml', `${YAML.stringify(await config())}`.replace(/^policies:\n/m, `policies:\n  - id: twice\n    match: { issuer: ci, claims: { ${first}: prod, ${second}: "*" } }\n    scopes: [logs:read]\n`));
      expect(problemsOf(path).join('\n'), first).toMatch(/^not valid YAML: Map keys must be unique/);
    }
  });

  it('refuses an unknown tag, and says so without the line it is on (which may hold a secret)', async () => {
    const secret = 'https://hooks.slack.com/services/T0/B0/WEBHOOK-SECRET-PART';
    const path = write('tag.yaml', `${YAML.stringify(await config())}\nnotify: { webhooks: [{ url: !secret "${secret}" }] }\n`);
    const written: string[] = [];
    const warn = process.emitWarning;
    process.emitWarning = ((warning: string | Error) => void written.push(String(warning))) as typeof process.emitWarning;
    try {
      const refused = problemsOf(path);
      expect(refused).toEqual([expect.stringMatching(/^not valid YAML: Unresolved tag: !secret at line \d+, column \d+:$/)]);
      expect(refused.join('\n')).not.toContain('SECRET');
    } finally {
      process.emitWarning = warn;
    }
    expect(written).toEqual([]);
  });

  it('refuses a database URL of another engine, or one that is not a URL, and never repeats its password', async () => {
    expect(await problems((c) => (c.database = 'mysql://broker:hunter2@db.internal/jit'))).toEqual([
      'database: a URL here must be postgres:// or postgresql:// (else give a SQLite file path)',
    ]);
    expect(await problems((c) => (c.database = 'postgres:///jit'))).toEqual(['database: a postgres:// URL must name its host']);
    const bad = await problems((c) => (c.database = 'postgres://broker:hun ter2@db:port/jit'));
    expect(bad).toEqual(['database: is not a valid postgres:// URL (a password with special characters must be percent-encoded)']);
    for (const line of bad) expect(line).not.toMatch(/hunter2|hun ter2/);
    // A URL missing a slash is a typo, never a file whose path would hold the password.
    for (const typo of ['postgres:/jit:S3cretPw@db.example/jit', 'PostgreSQL:jit@db/jit']) {
      const refused = await problems((c) => (c.database = typo));
      expect(refused).toEqual(['database: is not a valid postgres:// URL (postgres:// or postgresql://, then the host)']);
      expect(refused.join('\n')).not.toContain('S3cretPw');
    }
    expect(await problems((c) => (c.database = ' '))).toEqual(['database: must not begin or end with white space (a SQLite file path, or a postgres:// URL)']);
    // The env override is judged like the file.
    const path = write('db.yaml', await config());
    try {
      loadConfig(path, { BROKER_DB: 'postgres://broker:hunter2@db.internal:5432/jit' });
      loadConfig(path, { BROKER_DB: 'mongodb://broker:hunter2@db.internal/jit' });
      throw new Error('expected a refusal');
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).message).not.toMatch(/hunter2/);
    }
  });

  it('refuses a publishAhead not shorter than rotateEvery', async () => {
    expect(await problems((c) => (c.signing.publishAhead = '24h'))).toEqual([
      'signing.publishAhead: must be shorter than rotateEvery (publishAhead is 10m unless set)',
    ]);
    expect(await problems((c) => (c.signing = { ...c.signing, rotateEvery: '1h', publishAhead: '2h' }))).toEqual([
      'signing.publishAhead: must be shorter than rotateEvery (publishAhead is 10m unless set)',
    ]);
    // Against the defaults too: rotateEvery (24h), and publishAhead (10m) with a short rotateEvery.
    expect(await problems((c) => (c.signing = { algorithm: 'ES256', keyDir: c.signing.keyDir, publishAhead: '25h' }))).toEqual([
      'signing.publishAhead: must be shorter than rotateEvery (publishAhead is 10m unless set)',
    ]);
    expect(await problems((c) => (c.signing = { algorithm: 'ES256', keyDir: c.signing.keyDir, rotateEvery: '10m' }))).toEqual([
      'signing.publishAhead: must be shorter than rotateEvery (publishAhead is 10m unless set)',
    ]);
  });

  it('refuses limits that are not positive whole numbers', async () => {
    expect(await problems((c) => (c.limits = { requestsPerMinute: 0, liveGrants: -1, pendingRequests: 1.5 }))).toEqual([
      'limits.requestsPerMinute: Too small: expected number to be >0',
      'limits.liveGrants: Too small: expected number to be >0',
      'limits.pendingRequests: Invalid input: expected int, received number',
    ]);
  });

  it('refuses a webhook URL carrying a user or password, without repeating it, and an unknown format', async () => {
    const refused = await problems((c) => {
      c.notify = {
        webhooks: [
          { url: 'https://bot:s3cret@hooks.example/b', events: ['approval.requested'] },
          { url: 'https://token@hooks.example/b', events: ['approval.requested'] },
          { url: 'https://hooks.example/b', events: ['approval.requested'], format: 'xml' },
        ],
      };
    });
    expect(refused).toEqual([
      'notify.webhooks.0.url: must not carry a user or password (a webhook proves itself with secretFile)',
      'notify.webhooks.1.url: must not carry a user or password (a webhook proves itself with secretFile)',
      'notify.webhooks.2.format: Invalid option: expected one of "json"|"slack"',
    ]);
    for (const line of refused) expect(line).not.toMatch(/s3cret|token@/);
  });

  it('refuses two issuers whose URLs differ only in letter case, a default port or a trailing slash', async () => {
    const twin = (issuer: string) => (c: Record<string, any>) => c.identity.issuers.push({ ...c.identity.issuers[1], name: 'sso-twin', issuer });
    for (const spelling of ['HTTPS://SSO.TEST', 'https://sso.test/', 'https://Sso.Test:443', 'https://sso.test:443/', 'https://sso.test.', 'https://SSO.test.:443/']) {
      expect(await problems(twin(spelling))).toEqual([
        `identity.issuers.2.issuer: duplicate issuer "${spelling}": the same URL as issuer "sso" (letter case, default port, a trailing dot or slash and escaped unreserved characters aside); one entry per iss`,
      ]);
    }
    const http = (c: Record<string, any>) => {
      c.identity.issuers[1].issuer = 'http://sso.test/tenant/';
      c.identity.issuers.push({ ...c.identity.issuers[1], name: 'sso-twin', issuer: 'HTTP://sso.test:80/tenant' });
    };
    expect(await problems(http)).toHaveLength(1);
    const escaped = (c: Record<string, any>) => {
      c.identity.issuers[1].issuer = 'https://sso.test/~tenant';
      c.identity.issuers.push({ ...c.identity.issuers[1], name: 'sso-twin', issuer: 'https://sso.test/%7etenant' });
    };
    expect(await problems(escaped)).toHaveLength(1);
    // Not the same: another port, another path (paths keep their case), another scheme.
    for (const other of ['https://sso.test:8443', 'https://sso.test/Tenant', 'https://sso.test/tenant', 'http://sso.test']) {
      expect(() => parseConfig('test', baseConfigWith(twin(other)))).not.toThrow();
    }
  });

  it('refuses the broker\'s own issuer as a trusted issuer in another spelling too', async () => {
    expect(await problems((c) => (c.identity.issuers[1].issuer = 'HTTP://Broker.Test:80/'))).toEqual([
      'identity.issuers.1.issuer: the broker\'s own issuer can never be a trusted identity issuer',
    ]);
  });

  it('refuses two issuers with one SPIFFE trust domain, and a SPIFFE iss that another issuer names', async () => {
    expect(await problems((c) => c.identity.issuers.push(spire('spire'), spire('spire-2', { issuer: 'https://spire-2.example' })))).toEqual([
      'identity.issuers.3.spiffeTrustDomain: trust domain "example.org" is already issuer "spire"\'s; one issuer per trust domain',
    ]);
    // Identities of `spire` show iss spiffe://example.org: no other issuer may have that iss.
    const shown = await problems((c) => c.identity.issuers.push({ ...c.identity.issuers[0], name: 'ci-2', issuer: 'spiffe://example.org' }, spire('spire')));
    expect(shown).toEqual([
      'identity.issuers.3.spiffeTrustDomain: duplicate issuer "spiffe://example.org": the same URL as issuer "ci-2" (letter case, default port, a trailing dot or slash and escaped unreserved characters aside); one entry per iss',
    ]);
  });

  it('needs an issuer URL or a SPIFFE trust domain, and a trust domain as SPIFFE writes one', async () => {
    expect(await problems((c) => delete c.identity.issuers[0].issuer)).toEqual(['identity.issuers.0.issuer: required (unless spiffeTrustDomain names a SPIFFE trust domain)']);
    for (const domain of ['Example.org', 'example.org/x', 'spiffe://example.org', 'exa mple.org', '']) {
      expect(await problems((c) => c.identity.issuers.push(spire('spire', { spiffeTrustDomain: domain })))).toEqual([
        'identity.issuers.2.spiffeTrustDomain: must be a SPIFFE trust domain: lower-case letters, digits, ., - and _',
      ]);
    }
    expect(await problems((c) => c.identity.issuers.push(spire('spire', { kind: 'person' })))).toEqual([
      'identity.issuers.2.spiffeTrustDomain: a SPIFFE trust domain names workloads: only workload issuers have one',
    ]);
  });

  it('refuses bindClaims and initiatorClaim on a person issuer, and bindClaims that no token could satisfy', async () => {
    expect(
      await problems((c) => {
        c.identity.issuers[1].bindClaims = ['session'];
        c.identity.issuers[1].initiatorClaim = 'actor';
      }),
    ).toEqual(['identity.issuers.1.initiatorClaim: only workload issuers have an initiatorClaim', 'identity.issuers.1.bindClaims: only workload issuers have bindClaims']);
    expect(await problems((c) => (c.identity.issuers[0].bindClaims = ['run_id', ['run_id'], ['kubernetes.io', 'pod', 'uid'], ['kubernetes.io', 'pod']]))).toEqual([
      'identity.issuers.0.bindClaims.1: run_id is listed twice',
      'identity.issuers.0.bindClaims.3: [kubernetes.io, pod, uid] lies inside [kubernetes.io, pod], which is bound as a value',
    ]);
    expect(await problems((c) => (c.identity.issuers[0].bindClaims = ['run_id', [], ['']]))).toEqual([
      'identity.issuers.0.bindClaims.1: Too small: expected array to have >=1 items',
      'identity.issuers.0.bindClaims.2.0: Too small: expected string to have >=1 characters',
    ]);
  });

  it('refuses a people alias naming an unknown issuer, or an issuer where no alias could apply', async () => {
    const refused = await problems((c) => {
      c.identity.issuers.push({ ...c.identity.issuers[0], name: 'ci-anon', issuer: 'https://ci-anon.test', initiatorClaim: undefined });
      c.identity.issuers.push({ ...c.identity.issuers[1], name: 'sso-anon', issuer: 'https://sso-anon.test', usernameClaim: undefined });
      c.people = [
        {
          name: 'bob',
          aliases: [
            { issuer: 'github', username: 'bob-gh' },
            { issuer: 'ci-anon', username: 'bob' },
            { issuer: 'sso-anon', username: 'bob' },
          ],
        },
      ];
    });
    expect(refused).toEqual([
      'people.0.aliases.0.issuer: no identity issuer is named "github"',
      'people.0.aliases.1.issuer: workload issuer "ci-anon" has no initiatorClaim, so no alias on it could ever apply',
      'people.0.aliases.2.issuer: person issuer "sso-anon" has no usernameClaim, so no alias on it could ever apply',
    ]);
  });

  it('refuses one username, in any spelling, listed for two people', async () => {
    const refused = await problems((c) => {
      c.people = [
        { name: 'bob', aliases: [{ issuer: 'ci', username: 'bob-gh' }] },
        { name: 'robert', aliases: [{ issuer: 'sso', username: 'bob-gh' }, { issuer: 'ci', username: 'ＢＯＢ-gh\u200b ' }] },
      ];
    });
    expect(refused).toEqual([
      'people.1.aliases.1.username: "ＢＯＢ-gh\u200b " at "ci" is already an alias of people.0 ("bob"); one username names one person',
    ]);
    // One username at two issuers is two usernames; listed twice for one person, it is harmless.
    expect(() =>
      parseConfig('test', baseConfigWith((c) => (c.people = [{ name: 'bob', aliases: [{ issuer: 'ci', username: 'bob' }, { issuer: 'sso', username: 'bob' }, { issuer: 'ci', username: 'Bob' }] }]))),
    ).not.toThrow();
  });

  it('refuses a __proto__ key anywhere, which the schema would otherwise drop without a word', async () => {
    const path = write('proto.yaml', `${YAML.stringify(await config())}\nlimits: { __proto__: { liveGrants: 1 } }\n`);
    expect(problemsOf(path)).toEqual(['limits.__proto__: unknown field']); // strict sections name it themselves
    const raw = await config();
    (raw.roles[0].match as Record<string, unknown>).claims = JSON.parse('{"groups": "approvers", "__proto__": {"tenant": "acme"}}');
    expect(() => parseConfig('test', raw)).toThrow(/roles\.0\.match\.claims\.__proto__: never a valid key/);
  });

  it('warns of a person issuer without usernameClaim that takes tokens for several clients: pairwise subjects make one person two', async () => {
    const warned = async (edit: (c: Record<string, any>) => void) =>
      configWarnings(parseConfig('test', await config(edit))).filter((warning) => 'issuer' in warning.fields);
    // One client, or a usernameClaim naming the person alike for every client: nothing to say.
    expect(await warned((c) => (c.identity.issuers[1].usernameClaim = undefined))).toEqual([]);
    expect(await warned((c) => (c.identity.issuers[1].audiences = ['jit-broker', 'jit-console']))).toEqual([]);
    const [warning, ...more] = await warned((c) => {
      c.identity.issuers[1].usernameClaim = undefined;
      c.identity.issuers[1].audiences = ['jit-broker', 'jit-console'];
    });
    expect(more).toEqual([]);
    expect(warning?.fields).toEqual({ issuer: 'sso', audiences: ['jit-broker', 'jit-console'] });
    expect(warning?.message).toContain('Set usernameClaim');
  });

  it('refuses an issuer key set holding a private or secret key, inline or in its jwksFile, and never quotes the file', async () => {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    const privateJwk = await exportJWK(privateKey);
    expect(await problems((c) => (c.identity.issuers[1].jwks = { keys: [c.identity.issuers[1].jwks.keys[0], privateJwk] }))).toEqual([
      "identity.issuers.1.jwks.keys.1: holds private or secret key material: give the issuer's public keys only",
    ]);
    expect(await problems((c) => (c.identity.issuers[1].jwks = { keys: [{ kty: 'oct', k: 'c2VjcmV0' }] }))).toEqual([
      "identity.issuers.1.jwks.keys.0: holds private or secret key material: give the issuer's public keys only",
    ]);

    const fileOf = async (content: string) => {
      const file = write(`jwks-${Math.random()}.json`, content);
      const raw = await config((c) => {
        delete c.identity.issuers[1].jwks;
        c.identity.issuers[1].jwksFile = file;
      });
      const parsed = parseConfig('test', raw);
      return loadTrustedIssuers(parsed.identity.issuers).then(
        () => [],
        (error: unknown) => (error as ConfigError).problems,
      );
    };
    expect(await fileOf(JSON.stringify({ keys: [privateJwk] }))).toEqual([
      `issuer "sso": jwksFile is not a readable JWKS (key 0 holds private or secret key material: give the issuer's public keys only)`,
    ]);
    expect(await fileOf(JSON.stringify({ keys: [1] }))).toEqual(['issuer "sso": jwksFile is not a readable JWKS (key 0 is not a JWK object)']);
    // Pointed at a secret by mistake: its text goes nowhere.
    expect(await fileOf('kek-0123456789abcdef')).toEqual(['issuer "sso": jwksFile is not a readable JWKS (not JSON)']);
  });

  it('refuses a person listed twice, and names or usernames with nothing left once normalised', async () => {
    const refused = await problems((c) => {
      c.people = [
        { name: 'Bob', aliases: [{ issuer: 'ci', username: 'bob-gh' }] },
        { name: 'bob ', aliases: [{ issuer: 'sso', username: 'bob@acme.com' }] },
        { name: '\u200b', aliases: [{ issuer: 'sso', username: ' \u2060' }] },
      ];
    });
    expect(refused).toEqual([
      'people.1.name: "bob " is the name of people.0, once normalised; list each person once',
      'people.2.name: nothing is left of it once white space, control and invisible characters are removed',
      'people.2.aliases.0.username: nothing is left of it once white space, control and invisible characters are removed',
    ]);
  });
});

/** The base configuration with an edit, for the cases that must load. */
function baseConfigWith(edit: (c: Record<string, any>) => void): Record<string, unknown> {
  const raw = baseConfig(dir, sharedIssuers) as Record<string, any>;
  edit(raw);
  return raw;
}
const sharedIssuers = await createTestIssuers();
