import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evaluateCase, type CaseAsk, type Outcome } from '../../src/policy-tests/index.js';
import { compileRules } from '../../src/settings/index.js';
import { AGENTS_ISS, baseConfig, bearer, createTestIssuers, startTestBroker, withAgents, type TestBroker, type TestIssuers } from '../helpers/broker.js';
import { runCli } from '../helpers/cli.js';
import { allEvents } from '../helpers/records.js';
import { createTestIssuer, type TestIssuer } from '../helpers/issuer.js';
import { tempDir } from '../helpers/temp.js';

/**
 * `jit policy test` (CONTRACT section 7): cases judged by the broker's own rules without a broker
 * or a database. The configuration is the tests' usual one, with agents, a duty whose two steps
 * one policy grants together, and a scope that is only issued DPoP-bound.
 */

let dir: string;
let issuers: TestIssuers;
let agents: TestIssuer;
let raw: Record<string, any>;
let configFile: string;

/** The test configuration: the usual one, agents, a duty, a DPoP-only scope. */
function configure(config: Record<string, any>): void {
  withAgents(config, agents);
  config.scopes.push({ name: 'model:register', risk: 'high', maxTtl: '10m' }, { name: 'secrets:read', risk: 'low', maxTtl: '5m', requireDpop: true });
  config.policies.push(
    { id: 'registry', match: { issuer: 'ci', subject: 'repo:acme/registry:*' }, scopes: ['model:train', 'model:register'] },
    { id: 'secrets', match: { issuer: 'ci', subject: 'repo:acme/app:*' }, scopes: ['secrets:read'] },
  );
  config.duties = [{ name: 'model-release', type: 'model', steps: [{ name: 'train', scopes: ['model:train'] }, { name: 'register', scopes: ['model:register'] }] }];
}

const APP = 'repo:acme/app:ref:refs/heads/main';
const ML = 'repo:acme/ml:ref:refs/heads/main';
const pipeline = (claims: Record<string, unknown> = {}, subject = APP) => ({ issuer: 'ci', subject, claims: { repository: 'acme/app', actor: 'pat', ...claims } });
const ml = { issuer: 'ci', subject: ML, claims: { repository: 'acme/ml', ref: 'refs/heads/main', actor: 'pat' } };
const person = (sub: string, groups: string[]) => ({ issuer: 'sso', subject: sub, claims: { preferred_username: sub, groups } });
const registry = 'registry.acme.internal';

/** Cases with the outcome each gets, one or more of every kind. */
const CASES = [
  { name: 'a pipeline reads artifacts', identity: pipeline(), request: { scopes: ['artifacts:read'], audience: registry }, expect: { outcome: 'issued', ttl_seconds: 900 } },
  { name: 'a shorter lifetime is kept', identity: pipeline(), request: { scopes: ['artifacts:read'], audience: registry, ttl_seconds: 60 }, expect: { outcome: 'issued', ttl_seconds: 60 } },
  { name: 'ml-main caps a deploy at its 10 minutes', identity: ml, request: { scopes: ['model:deploy'], audience: registry }, expect: { outcome: 'pending_approval', approvals_required: 1, ttl_seconds: 600 } },
  { name: 'db:admin waits for two people', identity: pipeline({ repository: 'acme/db' }, 'repo:acme/db:x'), request: { scopes: ['db:admin'], audience: 'db' }, expect: { outcome: 'pending_approval', approvals_required: 2 } },
  { name: 'an app pipeline may not touch the database', identity: pipeline(), request: { scopes: ['db:admin'], audience: 'db' }, expect: { outcome: 'policy_denied' } },
  { name: 'ml-main deploys only to the registry', identity: ml, request: { scopes: ['model:deploy'], audience: 'prod' }, expect: { outcome: 'policy_denied' } },
  {
    name: 'train and deploy at once is toxic',
    identity: ml,
    request: { scopes: ['model:train', 'model:deploy'], audience: registry, authorization_details: [{ type: 'model', identifier: 'fraud-v1' }] },
    expect: { outcome: 'separation_of_duties' },
  },
  { name: 'a step scope naming no object is a bad request before any rule', identity: ml, request: { scopes: ['model:train', 'model:deploy'], audience: registry }, expect: { outcome: 'invalid_request' } },
  {
    name: 'two steps of one model in one request',
    identity: pipeline({ repository: 'acme/registry' }, 'repo:acme/registry:main'),
    request: { scopes: ['model:train', 'model:register'], audience: registry, authorization_details: [{ type: 'model', identifier: 'fraud-v1' }] },
    expect: { outcome: 'separation_of_duties' },
  },
  { name: 'a step names its model', identity: pipeline({ repository: 'acme/registry' }, 'repo:acme/registry:main'), request: { scopes: ['model:train'], audience: registry }, expect: { outcome: 'invalid_request' } },
  { name: 'secrets only DPoP-bound', identity: pipeline(), request: { scopes: ['secrets:read'], audience: 'vault' }, expect: { outcome: 'invalid_request' } },
  { name: 'secrets with a proof', identity: pipeline(), request: { scopes: ['secrets:read'], audience: 'vault', dpop: true }, expect: { outcome: 'issued', ttl_seconds: 300 } },
  { name: 'break-glass says why', identity: person('olga', ['on-call']), request: { scopes: ['logs:read'], audience: 'logs', break_glass: true, justification: 'short' }, expect: { outcome: 'invalid_request' } },
  {
    name: 'break-glass deploys at once for 5 minutes',
    identity: person('olga', ['on-call']),
    request: { scopes: ['model:deploy'], audience: registry, break_glass: true, justification: 'INC-9: the ranking model serves errors' },
    expect: { outcome: 'issued', approvals_required: 0, ttl_seconds: 300 },
  },
  { name: 'a pipeline token without repository', identity: { issuer: 'ci', subject: APP, claims: { actor: 'pat' } }, request: { scopes: ['artifacts:read'], audience: registry }, expect: { outcome: 'invalid_token' } },
  { name: 'a pipeline token without who started it', identity: { issuer: 'ci', subject: APP, claims: { repository: 'acme/app' } }, request: { scopes: ['artifacts:read'], audience: registry }, expect: { outcome: 'invalid_token' } },
  { name: 'a person without a username', identity: { issuer: 'sso', subject: 'olga', claims: { groups: ['on-call'] } }, request: { scopes: ['logs:read'], audience: 'logs' }, expect: { outcome: 'invalid_token' } },
  {
    name: 'a release agent for an ml engineer, capped by its rule',
    identity: person('erin', ['ml-eng']),
    actor: { issuer: 'agents', subject: 'agent:release-1', claims: { owner: 'olivia' } },
    request: { scopes: ['artifacts:read'], audience: registry },
    expect: { outcome: 'issued', ttl_seconds: 300 },
  },
  {
    name: 'the release agent may not ask for db:admin',
    identity: person('erin', ['ml-eng']),
    actor: { issuer: 'agents', subject: 'agent:release-1', claims: { owner: 'olivia' } },
    request: { scopes: ['db:admin'], audience: 'db' },
    expect: { outcome: 'policy_denied' },
  },
  {
    name: 'no rule lets a rogue agent act',
    identity: person('erin', ['ml-eng']),
    actor: { issuer: 'agents', subject: 'agent:rogue-1', claims: { owner: 'olivia' } },
    request: { scopes: ['artifacts:read'], audience: registry },
    expect: { outcome: 'invalid_request' },
  },
  {
    name: 'an agent without its owner is refused',
    identity: person('erin', ['ml-eng']),
    actor: { issuer: 'agents', subject: 'agent:release-1' },
    request: { scopes: ['artifacts:read'], audience: registry },
    expect: { outcome: 'invalid_token' },
  },
  { name: 'an audience that rings a bell', identity: pipeline(), request: { scopes: ['artifacts:read'], audience: `${registry}\u0007` }, expect: { outcome: 'invalid_request' } },
  {
    name: 'a justification that erases the line it is shown on',
    identity: person('olga', ['on-call']),
    request: { scopes: ['logs:read'], audience: 'logs', break_glass: true, justification: 'INC-9: \u001b[2Kthe build cache is corrupt' },
    expect: { outcome: 'invalid_request' },
  },
  {
    name: 'a model named backwards',
    identity: pipeline({ repository: 'acme/registry' }, 'repo:acme/registry:main'),
    request: { scopes: ['model:train'], audience: registry, authorization_details: [{ type: 'model', identifier: 'fraud-\u202e1v' }] },
    expect: { outcome: 'invalid_request' },
  },
  {
    name: 'an agent asks for an audience written backwards',
    identity: person('erin', ['ml-eng']),
    actor: { issuer: 'agents', subject: 'agent:release-1', claims: { owner: 'olivia' } },
    request: { scopes: ['artifacts:read'], audience: 'reg\u202eistry' },
    expect: { outcome: 'invalid_request' },
  },
];

const write = (name: string, text: string) => {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
};
const casesFile = (name: string, cases: unknown[]) => write(name, YAML.stringify({ cases }));
const policyTest = (...args: string[]) => runCli(['policy', 'test', ...args, '--config', configFile]);

beforeAll(async () => {
  dir = tempDir('jit-policy-test-');
  issuers = await createTestIssuers();
  agents = await createTestIssuer(AGENTS_ISS);
  raw = baseConfig(dir, issuers) as Record<string, any>;
  configure(raw);
  configFile = write('broker.yaml', YAML.stringify(raw));
});

describe('jit policy test', () => {
  it('passes a file whose every case gets the answer it expects: one line per case and a summary, exit 0', async () => {
    const result = await policyTest(casesFile('passing.yaml', CASES));
    expect(result.stderr).toBe('');
    const lines = result.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(CASES.length + 1);
    expect(lines.slice(0, -1).every((line) => line.startsWith('PASS  '))).toBe(true);
    expect(lines).toContain('PASS  ml-main caps a deploy at its 10 minutes: pending_approval, 1 approval, 600 s');
    expect(lines.find((line) => line.startsWith('PASS  train and deploy at once'))).toMatch(/separation_of_duties \(Separation rule "train-vs-deploy"/);
    expect(lines.at(-1)).toBe(`${CASES.length} cases: ${CASES.length} passed, 0 failed`);
    expect(result.code).toBe(0);
  });

  it('fails a file where a case gets another answer, showing both and why: exit 1', async () => {
    const cases = [
      CASES[0],
      { ...CASES[0], name: 'expects too long a lifetime', expect: { outcome: 'issued', ttl_seconds: 3600 } },
      { ...CASES[4], name: 'expects the database', expect: { outcome: 'issued' } },
      { ...CASES[2], name: 'expects one approval too many', expect: { outcome: 'pending_approval', approvals_required: 2 } },
    ];
    const file = casesFile('failing.yaml', cases);
    const result = await policyTest(file);
    expect(result.code).toBe(1);
    const lines = result.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^PASS {2}a pipeline reads artifacts/);
    // The line of each case in the file (YAML.stringify starts each at "  - ").
    const lineOf = (name: string) => YAML.stringify({ cases }).split('\n').findIndex((line, i, all) => line.includes(`name: ${name}`) && all[i]?.startsWith('  - ')) + 1;
    expect(lines[1]).toBe(`FAIL  expects too long a lifetime (${file}:${lineOf('expects too long a lifetime')}): expected issued, 3600 s, got issued, 900 s`);
    expect(lines[2]).toBe(
      `FAIL  expects the database (${file}:${lineOf('expects the database')}): expected issued, got policy_denied (Scope db:admin refused: no policy grants them to this identity.)`,
    );
    expect(lines[3]).toMatch(/^FAIL {2}expects one approval too many \(.*\): expected pending_approval, 2 approvals, got pending_approval, 1 approval, 600 s$/);
    expect(lines[4]).toBe('4 cases: 1 passed, 3 failed');
  });

  it('prints the results as JSON with --json', async () => {
    const result = await policyTest(casesFile('json.yaml', [CASES[0], { ...CASES[4], expect: { outcome: 'issued' } }]), '--json');
    expect(result.code).toBe(1);
    expect(JSON.parse(result.stdout)).toEqual({
      file: join(dir, 'json.yaml'),
      valid: true,
      passed: 1,
      failed: 1,
      cases: [
        { name: CASES[0]?.name, line: 2, passed: true, expected: { outcome: 'issued', ttl_seconds: 900 }, actual: { outcome: 'issued', approvals_required: 0, ttl_seconds: 900 } },
        {
          name: CASES[4]?.name,
          line: expect.any(Number),
          passed: false,
          expected: { outcome: 'issued' },
          actual: { outcome: 'policy_denied', detail: 'Scope db:admin refused: no policy grants them to this identity.' },
        },
      ],
    });
  });

  it('refuses a malformed file, naming each bad field and its line: exit 2', async () => {
    const file = write(
      'malformed.yaml',
      [
        'cases:',
        '  - name: reads',
        '    identity: { issuer: ci, subject: "repo:acme/app:main" }',
        '    request: { scopes: [artifacts:read], audience: registry, ttl: 60 }',
        '    expect: { outcome: granted }',
        '  - name: reads',
        '    identity: { issuer: ci, subject: "repo:acme/app:main" }',
        '    request:',
        '      audience: registry',
        '    expect: { outcome: policy_denied, ttl_seconds: 60 }',
        '',
      ].join('\n'),
    );
    const result = await policyTest(file, '--json');
    expect(result.code).toBe(2);
    const lines = result.stderr.trimEnd().split('\n');
    expect(lines).toEqual(
      expect.arrayContaining([
        `jit policy test: ${file}:4: cases.0.request.ttl: unknown field`,
        expect.stringMatching(new RegExp(`^jit policy test: ${file}:5: cases\\.0\\.expect\\.outcome: Invalid option: expected one of "issued"\\|"pending_approval"`)),
        `jit policy test: ${file}:6: cases.1.name: "reads" is the name of cases.0 too; a case is known by its name`,
        expect.stringMatching(new RegExp(`^jit policy test: ${file}:9: cases\\.1\\.request\\.scopes: Invalid input: expected array`)),
        `jit policy test: ${file}:10: cases.1.expect.ttl_seconds: only a granting outcome (issued, pending_approval) has one, not policy_denied`,
      ]),
    );
    expect(lines).toHaveLength(5);
    expect(JSON.parse(result.stdout)).toMatchObject({ valid: false, problems: expect.arrayContaining([{ file, line: 4, field: 'cases.0.request.ttl', message: 'unknown field' }]) });

    const broken = await policyTest(write('broken.yaml', 'cases:\n  - name: a\n    name: b\n'));
    expect(broken).toMatchObject({ code: 2, stdout: '' });
    expect(broken.stderr).toMatch(new RegExp(`^jit policy test: ${join(dir, 'broken.yaml')}:3: not valid YAML: Map keys must be unique`));
    // Keys that read as one member, and a tag yaml cannot resolve (refused in words that quote no line).
    const twice = await policyTest(write('twice.yaml', 'cases:\n  - name: a\n    identity: { issuer: ci, subject: x, claims: { 1: a, "1": b } }\n'));
    expect(twice.stderr).toMatch(/:3: not valid YAML: Map keys must be unique/);
    const tagged = await policyTest(write('tagged.yaml', 'cases:\n  - name: !secret hidden-words\n'));
    expect(tagged).toMatchObject({ code: 2, stdout: '' });
    expect(tagged.stderr).toMatch(/:2: not valid YAML: Unresolved tag: !secret\n$/);
    expect(tagged.stderr).not.toContain('hidden-words');
    expect((await policyTest(join(dir, 'missing.yaml'))).stderr).toBe(`jit policy test: ${join(dir, 'missing.yaml')}: cannot read the file (ENOENT)\n`);
    // A case's token is one sent while valid: its exp is the harness's.
    const timed = await policyTest(write('timed.yaml', YAML.stringify({ cases: [{ name: 'exp', identity: { issuer: 'ci', subject: APP, claims: { exp: 1 } }, request: { scopes: ['artifacts:read'], audience: registry }, expect: { outcome: 'issued' } }] })));
    expect(timed.code).toBe(2);
    expect(timed.stderr).toContain('cases.0.identity.claims: a case\'s token is valid now: give none of exp');
    // Aliases that would expand without bound: an invalid file (2), not a failing case (1).
    const laughs = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]', ...'bcdefghi'.split('').map((k, i) => `${k}: &${k} [${Array(9).fill(`*${'abcdefgh'[i]}`).join(',')}]`), 'cases: *i', ''].join('\n');
    const bomb = await policyTest(write('bomb.yaml', laughs));
    expect(bomb).toMatchObject({ code: 2, stdout: '' });
    expect(bomb.stderr).toMatch(/not valid YAML: Excessive alias count/);
  });

  it('refuses a case that can never be reached (an issuer, a scope, an object type the configuration lacks): exit 2, never a pass', async () => {
    const unreachable = [
      { ...CASES[4], name: 'a typo in the issuer', identity: { ...pipeline(), issuer: 'github' } },
      { ...CASES[4], name: 'a typo in the scope', request: { scopes: ['db:admn'], audience: 'db' } },
      { ...CASES[8], name: 'a type no duty has', request: { scopes: ['model:train'], audience: registry, authorization_details: [{ type: 'modle', identifier: 'x' }] }, expect: { outcome: 'invalid_request' } },
      { ...CASES[16], name: 'a typo in the actor\'s issuer', actor: { issuer: 'agent', subject: 'agent:release-1' } },
    ];
    const file = casesFile('unreachable.yaml', unreachable);
    const result = await policyTest(file);
    expect(result).toMatchObject({ code: 2, stdout: '' });
    expect(result.stderr.trimEnd().split('\n')).toEqual([
      expect.stringMatching(new RegExp(`^jit policy test: ${file}:\\d+: cases\\.0\\.identity\\.issuer: no identity issuer is named "github" in the configuration$`)),
      expect.stringMatching(/: cases\.1\.request\.scopes\.0: no scope is named "db:admn" in the configuration$/),
      expect.stringMatching(/: cases\.2\.request\.authorization_details\.0\.type: no duty has the type "modle" in the configuration$/),
      expect.stringMatching(/: cases\.3\.actor\.issuer: no identity issuer is named "agent" in the configuration$/),
    ]);
  });

  it('refuses an invalid configuration: exit 2, with its problems', async () => {
    const bad = write('bad-broker.yaml', YAML.stringify({ ...raw, policies: [{ id: 'x', match: { issuer: 'nobody' }, scopes: ['artifacts:read'] }] }));
    const result = await runCli(['policy', 'test', casesFile('any.yaml', [CASES[0]]), '--config', bad]);
    expect(result).toMatchObject({ code: 2, stdout: '' });
    expect(result.stderr).toContain(`jit policy test: ${bad}: policies.0.match.issuer: no identity issuer is named "nobody"`);
    expect((await runCli(['policy', 'test'])).code).toBe(2);
  });
});

describe('a case is judged as the broker judges the same request', () => {
  let t: TestBroker;
  beforeAll(async () => {
    t = await startTestBroker({ issuers, configure: (config) => configure(config as Record<string, any>) });
  });
  afterAll(async () => {
    await t?.close();
  });

  /** What the broker answers a request, as an outcome: through /v1/credentials, or /oauth2/token for an agent. */
  async function answer(ask: CaseAsk): Promise<{ outcome: Outcome; ttl?: number; approvals?: number }> {
    const signer = (issuer: string) => (issuer === 'ci' ? issuers.ci : issuer === 'sso' ? issuers.sso : agents);
    const token = (who: NonNullable<CaseAsk['actor']>) => signer(who.issuer).token(who.subject, who.claims, { now: t.clock() });
    const { request } = ask;
    if (ask.actor) {
      const response = await t.http
        .post('/oauth2/token')
        .type('form')
        .send({
          grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
          subject_token: await token(ask.identity),
          subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
          actor_token: await token(ask.actor),
          actor_token_type: 'urn:ietf:params:oauth:token-type:jwt',
          scope: request.scopes.join(' '),
          audience: request.audience,
          task_id: 'same',
        });
      if (response.status === 200) return { outcome: 'issued', ttl: response.body.expires_in };
      // An actor that is not a valid identity is invalid_request at the token endpoint; the case calls it invalid_token.
      const reason = response.body.error_description as string;
      if (/actor_token was not accepted/.test(reason)) return { outcome: 'invalid_token' };
      return { outcome: response.body.error === 'invalid_scope' ? 'policy_denied' : 'invalid_request' };
    }
    const response = await t.http
      .post('/v1/credentials')
      .set(bearer(await token(ask.identity)))
      .send({ task_id: 'same', scopes: request.scopes, audience: request.audience, ttl_seconds: request.ttl_seconds, break_glass: request.break_glass, justification: request.justification, authorization_details: request.authorization_details });
    if (response.status === 201) return { outcome: 'issued', ttl: response.body.expires_in, approvals: 0 };
    if (response.status === 202) return { outcome: 'pending_approval', approvals: response.body.approvals_required };
    return { outcome: String(response.body.type).replace(/^.*:/, '') as Outcome };
  }

  it.each(CASES.filter((one) => !('dpop' in one.request)).map((one) => [one.name, one] as const))('%s', async (_name, one) => {
    const ask = { ...one, request: { break_glass: false, dpop: false, ...one.request } } as CaseAsk;
    const tested = evaluateCase(compileRules(t.config), ask);
    const answered = await answer(ask);
    expect(answered.outcome).toBe(tested.outcome);
    expect(tested.outcome).toBe(one.expect.outcome);
    if (answered.ttl !== undefined) expect(answered.ttl).toBe(tested.ttlSeconds);
    if (answered.approvals !== undefined) expect(answered.approvals).toBe(tested.approvalsRequired);
  });
});

describe('a rule reading a token\'s aud or times', () => {
  it('judges a case as the broker judges a token, which always carries them', async () => {
    const t = await startTestBroker({
      configure(config: Record<string, any>) {
        config.identity.issuers[0].requiredClaims = ['repository', 'iat', 'exp'];
        config.policies.unshift({ id: 'this-broker-only', match: { issuer: 'ci', claims: { aud: 'jit-broker' } }, scopes: ['model:train'] });
      },
    });
    try {
      const live = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ task_id: 't', scopes: ['model:train'], audience: registry });
      expect(live.status).toBe(201);
      const tested = evaluateCase(compileRules(t.config), { identity: pipeline(), request: { scopes: ['model:train'], audience: registry, break_glass: false, dpop: false } });
      expect(tested.outcome).toBe('issued');
    } finally {
      await t.close();
    }
  });
});

describe('a case\'s aud', () => {
  let t: TestBroker;
  beforeAll(async () => {
    t = await startTestBroker({ issuers, configure: (config) => configure(config as Record<string, any>) });
  });
  afterAll(async () => {
    await t?.close();
  });

  it.each([
    ['the issuer\'s audience', 'jit-broker', 'issued'],
    ['another audience', 'someone-else', 'invalid_token'],
    ['several, the issuer\'s among them', ['someone-else', 'jit-broker'], 'issued'],
    ['several, none of them the issuer\'s', ['someone-else', 'another'], 'invalid_token'],
  ] as const)('%s', async (_name, aud, outcome) => {
    const who = pipeline({ aud });
    const answered = await t.http.post('/v1/credentials').set(bearer(await issuers.ci.token(APP, who.claims, { now: t.clock() }))).send({ task_id: 'same', scopes: ['artifacts:read'], audience: registry });
    expect(answered.status).toBe(outcome === 'issued' ? 201 : 401);
    const tested = evaluateCase(compileRules(t.config), { identity: who, request: { scopes: ['artifacts:read'], audience: registry, break_glass: false, dpop: false } });
    expect(tested.outcome).toBe(outcome);
  });

  it('is read from a cases file and honoured; without one, the issuer\'s audience is assumed', async () => {
    const cases = [
      { name: 'a token for another service', identity: pipeline({ aud: 'someone-else' }), request: { scopes: ['artifacts:read'], audience: registry }, expect: { outcome: 'invalid_token' } },
      { name: 'a token for this broker', identity: pipeline(), request: { scopes: ['artifacts:read'], audience: registry }, expect: { outcome: 'issued' } },
    ];
    const result = await policyTest(write('aud.yaml', YAML.stringify({ cases })));
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(result.stdout).toMatch(/^PASS {2}a token for another service: invalid_token \(the identity would be refused \(401\): audience \(/m);
  });
});

describe('a token\'s nbf and iat, which a live token may lack', () => {
  let t: TestBroker;
  beforeAll(async () => {
    // ci: maxTokenAge (so every token carries iat), nbf required; sso: neither, iat required.
    t = await startTestBroker({
      issuers,
      configure(config: Record<string, any>) {
        configure(config);
        config.identity.issuers[0].requiredClaims = ['repository', 'nbf'];
        config.identity.issuers[1].requiredClaims = ['iat'];
      },
    });
  });
  afterAll(async () => {
    await t?.close();
  });

  const now = () => Math.floor(t.clock() / 1000);
  const olga = person('olga', ['on-call']);
  it.each([
    ['a pipeline token without nbf', 'ci', {}, 'invalid_token'],
    ['a pipeline token with nbf', 'ci', { nbf: 1_767_225_600 }, 'issued'],
    ['a pipeline token whose nbf is an hour ahead', 'ci', { nbf: 'ahead' }, 'invalid_token'],
    ['a person token without iat', 'sso', {}, 'invalid_token'],
    ['a person token with iat', 'sso', { iat: 1_767_225_600 }, 'issued'],
    ['a person token issued an hour ahead', 'sso', { iat: 'ahead' }, 'invalid_token'],
  ] as const)('%s', async (_name, issuer, times, outcome) => {
    const stated = Object.fromEntries(Object.entries(times).map(([claim, value]) => [claim, value === 'ahead' ? now() + 3600 : value]));
    const who = issuer === 'ci' ? pipeline(stated) : { ...olga, claims: { ...olga.claims, ...stated } };
    const request = issuer === 'ci' ? { scopes: ['artifacts:read'], audience: registry } : { scopes: ['logs:read'], audience: 'logs' };
    // The test issuer puts iat in every token unless told to leave it out.
    const token = await (issuer === 'ci' ? issuers.ci : issuers.sso).token(who.subject, { ...(issuer === 'sso' ? { iat: undefined } : {}), ...who.claims }, { now: t.clock() });
    const answered = await t.http.post('/v1/credentials').set(bearer(token)).send({ task_id: 'same', ...request });
    expect(answered.status).toBe(outcome === 'issued' ? 201 : 401);
    const tested = evaluateCase(compileRules(t.config), { identity: who, request: { ...request, break_glass: false, dpop: false } });
    expect(tested.outcome).toBe(outcome);
  });

  it('says which: the missing claim, or the time ahead', () => {
    const rules = compileRules(t.config);
    const ask = (claims: Record<string, unknown>) => evaluateCase(rules, { identity: pipeline(claims), request: { scopes: ['artifacts:read'], audience: registry, break_glass: false, dpop: false } }).detail;
    expect(ask({})).toBe('the identity would be refused (401): missing claim nbf');
    expect(ask({ nbf: now() + 3600 })).toMatch(/^the identity would be refused \(401\): not yet valid \(/);
  });

  it('reads a cases file stating them', async () => {
    const cases = [
      { name: 'nbf stated', identity: pipeline({ nbf: 0 }), request: { scopes: ['artifacts:read'], audience: registry }, expect: { outcome: 'issued' } },
      { name: 'nbf not stated', identity: pipeline(), request: { scopes: ['artifacts:read'], audience: registry }, expect: { outcome: 'invalid_token' } },
    ];
    const file = write('times.yaml', YAML.stringify({ cases }));
    const strict = write('times-broker.yaml', YAML.stringify({ ...raw, identity: { issuers: raw.identity.issuers.map((one: Record<string, unknown>) => (one.name === 'ci' ? { ...one, requiredClaims: ['repository', 'nbf'] } : one)) } }));
    expect(await runCli(['policy', 'test', file, '--config', strict])).toMatchObject({ code: 0, stderr: '' });
  });
});

describe('a SPIFFE case is routed and checked as the broker routes and checks a JWT-SVID', () => {
  let t: TestBroker;
  let spire: TestIssuer;
  const workload = 'spiffe://example.org/ns/prod/sa/deployer';

  beforeAll(async () => {
    spire = await createTestIssuer('unused');
    t = await startTestBroker({
      issuers,
      configure(config: Record<string, any>) {
        configure(config);
        config.identity.issuers.push({
          name: 'spire', kind: 'workload', spiffeTrustDomain: 'example.org',
          jwks: { keys: [{ ...spire.publicJwk, use: 'jwt-svid' }] }, audiences: ['jit-broker'], algorithms: ['ES256'],
        });
        config.policies.push(
          { id: 'svid', match: { issuer: 'spire', subject: 'spiffe://example.org/ns/prod/*' }, scopes: ['artifacts:read'] },
          // A CI subject shaped like a SPIFFE ID: the broker takes such a token to the trust domain's issuer.
          { id: 'ci-spiffe-shaped', match: { issuer: 'ci', subject: 'spiffe://example.org/*' }, scopes: ['artifacts:read'] },
        );
      },
    });
  });
  afterAll(async () => {
    await t?.close();
  });

  const ci = { repository: 'acme/app', actor: 'pat' };
  it.each([
    ['a workload of the trust domain', 'spire', workload, 'issued'],
    ['a path climbing out of its namespace', 'spire', 'spiffe://example.org/ns/prod/../../admin', 'invalid_token'],
    ['a trailing slash', 'spire', `${workload}/`, 'invalid_token'],
    ['a space', 'spire', 'spiffe://example.org/ns/prod/sa/deploy er', 'invalid_token'],
    ['the trust domain in capitals', 'spire', 'spiffe://EXAMPLE.org/ns/prod/sa/deployer', 'invalid_token'],
    ['a CI token whose subject names the trust domain', 'ci', workload, 'invalid_token'],
  ] as const)('%s', async (_name, issuer, subject, outcome) => {
    const identity = { issuer, subject, ...(issuer === 'ci' ? { claims: ci } : {}) };
    const tested = evaluateCase(compileRules(t.config), { identity, request: { scopes: ['artifacts:read'], audience: registry, break_glass: false, dpop: false } });
    const token = issuer === 'ci' ? await issuers.ci.token(subject, ci, { now: t.clock() }) : await spire.token(subject, { iss: undefined }, { now: t.clock() });
    const answered = await t.http.post('/v1/credentials').set(bearer(token)).send({ task_id: 'same', scopes: ['artifacts:read'], audience: registry });
    expect(answered.status).toBe(outcome === 'issued' ? 201 : 401);
    expect(tested.outcome).toBe(outcome);
  });

  it('says why: which claim, or where the subject takes the token', () => {
    const rules = compileRules(t.config);
    const ask = (issuer: string, subject: string) => evaluateCase(rules, { identity: { issuer, subject, claims: ci }, request: { scopes: ['artifacts:read'], audience: registry, break_glass: false, dpop: false } });
    expect(ask('spire', `${workload}/`).detail).toBe('the identity would be refused (401): invalid claim sub (not a SPIFFE ID in example.org)');
    expect(ask('ci', workload).detail).toBe('the identity would be refused (401): unknown issuer (its subject takes the token to the issuer of trust domain example.org)');
  });
});

describe('a case\'s text is read as the API reads it', () => {
  let t: TestBroker;
  beforeAll(async () => {
    t = await startTestBroker({ issuers, configure: (config) => configure(config as Record<string, any>) });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('answers text that is not well-formed, or that the API\'s patterns refuse, with the 400 the broker gives', async () => {
    const rules = compileRules(t.config);
    for (const audience of [`${registry}\ud800`, `${registry}\u0000`, `${registry}\u2066`]) {
      const tested = evaluateCase(rules, { identity: pipeline(), request: { scopes: ['artifacts:read'], audience, break_glass: false, dpop: false } });
      const answered = await t.http.post('/v1/credentials').set(bearer(await issuers.ci.token(APP, pipeline().claims, { now: t.clock() }))).send({ task_id: 'same', scopes: ['artifacts:read'], audience });
      expect(answered.status, JSON.stringify(audience)).toBe(400);
      expect(tested).toEqual({ outcome: 'invalid_request', detail: answered.body.detail });
    }
  });

  it('reads an empty list of actions as the API does: a case may state it', async () => {
    const cases = [{ name: 'empty actions', identity: { issuer: 'ci', subject: APP, claims: pipeline().claims }, request: { scopes: ['artifacts:read'], audience: registry, authorization_details: [{ type: 'model', identifier: 'm', actions: [] }] }, expect: { outcome: 'issued' } }];
    const result = await policyTest(write('empty-actions.yaml', YAML.stringify({ cases })));
    expect(result).toMatchObject({ code: 0, stderr: '' });
  });

  it('answers an identity past the 8 KiB of a token with the 401 the broker gives', async () => {
    const claims = { ...pipeline().claims, note: 'n'.repeat(9_000) };
    const tested = evaluateCase(compileRules(t.config), { identity: { ...pipeline(), claims }, request: { scopes: ['artifacts:read'], audience: registry, break_glass: false, dpop: false } });
    const answered = await t.http.post('/v1/credentials').set(bearer(await issuers.ci.token(APP, claims, { now: t.clock() }))).send({ task_id: 'same', scopes: ['artifacts:read'], audience: registry });
    expect(answered.status).toBe(401);
    expect(tested).toMatchObject({ outcome: 'invalid_token', detail: expect.stringContaining('too large') });
  });

  it('measures an identity as the broker measures its token, header and signature included: 8,192 bytes pass, 8,194 do not', async () => {
    // A token as short as an ES256 issuer can make it: a header of alg alone, a 64-byte signature.
    const token = (claims: Record<string, unknown>) => issuers.ci.token(APP, claims, { now: t.clock(), header: { kid: undefined, typ: undefined } });
    const [header, payload, signature] = (await token({ ...pipeline().claims, note: '' })).split('.') as [string, string, string];
    const bytes = Buffer.from(payload, 'base64url').length;
    for (const [size, outcome, status] of [[8192, 'issued', 201], [8194, 'invalid_token', 401]] as const) {
      // n bytes of claims are ceil(4n / 3) characters of base64url.
      const claims = { ...pipeline().claims, note: 'n'.repeat(Math.floor((3 * (size - header.length - signature.length - 2)) / 4) - bytes) };
      const live = await token(claims);
      expect(live.length).toBe(size);
      // Its claims alone stay a hundred bytes under the bound.
      expect(live.split('.')[1]?.length).toBeLessThan(8192 - 100);
      const answered = await t.http.post('/v1/credentials').set(bearer(live)).send({ task_id: 'same', scopes: ['artifacts:read'], audience: registry });
      expect(answered.status).toBe(status);
      const tested = evaluateCase(compileRules(t.config), { identity: { ...pipeline(), claims }, request: { scopes: ['artifacts:read'], audience: registry, break_glass: false, dpop: false } });
      expect(tested.outcome).toBe(outcome);
    }
  });

  it('takes a subject as long as a token\'s, and answers one past the broker\'s 1,024 bytes with the 401 it gives', async () => {
    for (const [subject, outcome, status] of [[`repo:acme/app:ref:refs/heads/${'b'.repeat(600)}`, 'issued', 201], [`repo:acme/app:ref:refs/heads/${'b'.repeat(1_100)}`, 'invalid_token', 401]] as const) {
      const answered = await t.http.post('/v1/credentials').set(bearer(await issuers.ci.token(subject, pipeline().claims, { now: t.clock() }))).send({ task_id: 'same', scopes: ['artifacts:read'], audience: registry });
      expect(answered.status).toBe(status);
      const cases = [{ name: 'a long branch', identity: pipeline({}, subject), request: { scopes: ['artifacts:read'], audience: registry }, expect: { outcome } }];
      expect(await policyTest(write(`long-subject-${outcome}.yaml`, YAML.stringify({ cases })))).toMatchObject({ code: 0, stderr: '' });
    }
  });

  it('answers authorization_details past the API\'s 8 KiB with the 400 the broker gives', async () => {
    const details = Array.from({ length: 16 }, (_, i) => ({ type: 'model', identifier: `fraud-${i}`, actions: Array.from({ length: 16 }, () => 'a'.repeat(40)) }));
    const ml = { issuer: 'ci', subject: 'repo:acme/ml:ref:refs/heads/main', claims: { repository: 'acme/ml', ref: 'refs/heads/main', actor: 'pat' } };
    const tested = evaluateCase(compileRules(t.config), { identity: ml, request: { scopes: ['model:train'], audience: registry, break_glass: false, dpop: false, authorization_details: details } });
    const answered = await t.http
      .post('/v1/credentials')
      .set(bearer(await issuers.ci.token(ml.subject, ml.claims, { now: t.clock() })))
      .send({ task_id: 'same', scopes: ['model:train'], audience: registry, authorization_details: details });
    expect(answered.status).toBe(400);
    expect(tested).toMatchObject({ outcome: 'invalid_request', detail: expect.stringContaining('at most 8192 bytes as JSON') });
  });
});

describe('break-glass under a maxPerIdentityPerDay of 0 is answered 429 by the rules alone', () => {
  let t: TestBroker;
  let noGlassFile: string;
  /** A break-glass grant issued before the quota became 0. */
  let parent: { access_token: string };
  const olga = person('olga', ['on-call']);
  const why = 'INC-9: the ranking model serves errors';
  const olgaToken = () => issuers.sso.token(olga.subject, olga.claims, { now: t.clock() });

  beforeAll(async () => {
    t = await startTestBroker({ issuers, configure: (config) => configure(config as Record<string, any>) });
    parent = (await t.http.post('/v1/credentials').set(bearer(await olgaToken())).send({ task_id: 'before', scopes: ['logs:read'], audience: 'logs', break_glass: true, justification: why })).body;
    const edited = baseConfig(t.dir, issuers, t.db.url) as Record<string, any>;
    configure(edited);
    edited.breakGlass.maxPerIdentityPerDay = 0;
    noGlassFile = write('no-break-glass.yaml', YAML.stringify(edited));
    expect(await t.broker.reload(noGlassFile, {})).toMatchObject({ status: 'applied', changed: ['breakGlass'] });
  });
  afterAll(async () => {
    await t?.close();
  });

  it.each([
    ['break-glass', { scopes: ['logs:read'], audience: 'logs', break_glass: true, justification: why }, 429, 'rate_limited'],
    ['the same without break-glass', { scopes: ['logs:read'], audience: 'logs' }, 201, 'issued'],
    ['break-glass for a scope no policy grants', { scopes: ['db:admin'], audience: 'db', break_glass: true, justification: why }, 403, 'policy_denied'],
    ['break-glass without a justification long enough', { scopes: ['logs:read'], audience: 'logs', break_glass: true, justification: 'now' }, 400, 'invalid_request'],
  ] as const)('%s', async (_name, request, status, outcome) => {
    const tested = evaluateCase(compileRules(t.broker.config), { identity: olga, request: { break_glass: false, dpop: false, ...request, scopes: [...request.scopes] } });
    const answered = await t.http.post('/v1/credentials').set(bearer(await olgaToken())).send({ task_id: 'same', ...request });
    expect(answered.status).toBe(status);
    expect(tested.outcome).toBe(outcome);
    if (status !== 429) return;
    expect(tested.detail).toBe(answered.body.detail);
    expect(answered.headers['retry-after']).toBe('86400');
    const refused = (await allEvents(t)).filter((event) => event.type === 'request.refused').at(-1);
    expect(refused?.data).toMatchObject({ problem: 'rate_limited', break_glass: true });
  });

  it('still issues a child of a break-glass grant: no new use', async () => {
    const child = await t.http.post('/oauth2/token').type('form').send({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: parent.access_token,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      task_id: 'child',
    });
    expect(child.status).toBe(200);
  });

  it('fails a case expecting break-glass to be issued, with the broker\'s answer', async () => {
    const file = casesFile('no-break-glass.cases.yaml', [{ name: 'olga breaks the glass', identity: olga, request: { scopes: ['logs:read'], audience: 'logs', break_glass: true, justification: why }, expect: { outcome: 'issued' } }]);
    const result = await runCli(['policy', 'test', file, '--config', noGlassFile]);
    expect(result.code).toBe(1);
    expect(result.stdout).toContain('expected issued, got rate_limited (Break-glass quota spent: 0 grants per identity in any 24 hours.)');
  });
});

describe('jit policy explain', () => {
  const explain = (...args: string[]) => runCli(['policy', 'explain', ...args, '--config', configFile]);
  const ml = ['--issuer', 'ci', '--subject', ML, '--claim', 'repository=acme/ml', '--claim', 'ref=refs/heads/main', '--claim', 'actor=bob'];

  it('shows a granted scope: which policy, the lifetime cap and where it comes from, approvals and from whom, separation, DPoP', async () => {
    const result = await explain(...ml, '--scope', 'model:deploy', '--scope', 'artifacts:read', '--audience', registry);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    const lines = result.stdout.split('\n');
    expect(lines.slice(0, 4)).toEqual([
      `identity   ci ${ML} (workload, started by bob; separation counts it as u:bob; roles: none)`,
      `request    model:deploy artifacts:read for ${registry}`,
      'outcome    pending_approval: 1 approval, 10 min',
      'policies   matching this identity: pipelines, ml-main',
    ]);
    expect(result.stdout).toContain(
      [
        'model:deploy  high risk, at most 10 min',
        '  granted by  policy ml-main',
        '  lifetime    at most 10 min: the scope\'s maxTtl',
        '  approvals   1 distinct person with the approver role (sso groups=approvers), and only sso groups=ml-release',
        '              never the requester, its person, whoever started its job, or an actor of the request',
        '  separation  train-vs-deploy: never held at once with model:train',
        '  DPoP        not required',
        '  break-glass allowed, at most 5 min',
      ].join('\n'),
    );
    // artifacts:read: both pipelines and ml-main grant it; the grant counts under the first.
    expect(result.stdout).toContain('  granted by  policy pipelines, the first in configuration order of pipelines, ml-main\n  lifetime    at most 15 min: the scope\'s maxTtl\n  approvals   none: issued at once');
    expect(lines.at(-2)).toBe('lifetime   10 min, set by model:deploy\'s maxTtl');
    // model:train allows 30 minutes; ml-main, the one policy granting it, caps it at 10.
    const train = await explain(...ml, '--scope', 'model:train', '--audience', registry, '--object', 'model=fraud-v1');
    expect(train.stdout).toContain('  lifetime    at most 10 min: policy ml-main\'s maxTtl');
    expect(train.stdout).toContain('lifetime   10 min, set by policy ml-main\'s maxTtl for model:train');
  });

  it('shows why a scope is refused: no policy lists it, or one lists it for another audience', async () => {
    const none = await explain(...ml, '--scope', 'db:admin', '--audience', 'db');
    expect(none.stdout).toContain('outcome    policy_denied (Scope db:admin refused: no policy grants them to this identity.)');
    expect(none.stdout).toContain('db:admin  high risk, at most 10 min\n  refused     no policy matching this identity lists it\n  approvals   2 distinct people with the approver role');
    expect(none.stdout).not.toMatch(/^lifetime/m);
    const audience = await explain(...ml, '--scope', 'model:deploy', '--audience', 'prod');
    expect(audience.stdout).toContain('  refused     listed by ml-main (not for this audience)');
  });

  it('shows the duty and step a scope is, and the outcome without or with its object named', async () => {
    const registryRun = ['--issuer', 'ci', '--subject', 'repo:acme/registry:main', '--claim', 'repository=acme/registry', '--claim', 'actor=pat'];
    const unnamed = await explain(...registryRun, '--scope', 'model:register', '--audience', registry);
    expect(unnamed.stdout).toMatch(/^outcome {4}invalid_request \(Scope model:register is step "register" of duty "model-release": name its object/m);
    expect(unnamed.stdout).toContain('  duty        model-release, step register: names its object (authorization_details type model)');
    const named = await explain(...registryRun, '--scope', 'model:register', '--audience', registry, '--object', 'model=fraud-v1');
    expect(named.stdout).toContain(`request    model:register for ${registry} on model=fraud-v1`);
    expect(named.stdout).toContain('outcome    pending_approval: 1 approval, 10 min');
  });

  it('shows the delegation rule for an actor, and the lifetime it caps; --json gives the same as data', async () => {
    const args = ['--issuer', 'sso', '--subject', 'erin', '--claim', 'preferred_username=erin', '--claim', 'groups=["ml-eng"]', '--actor-issuer', 'agents', '--actor-subject', 'agent:release-1', '--actor-claim', 'owner=olivia', '--scope', 'artifacts:read', '--audience', registry];
    const text = await explain(...args);
    expect(text.stdout).toContain('actor      agents agent:release-1 (workload, started by olivia; separation counts it as u:olivia; roles: none)');
    expect(text.stdout).toContain('delegation rule release-agent, at most 5 min\nlifetime   5 min, set by delegation rule release-agent\'s maxTtl');
    const json = JSON.parse((await explain(...args, '--json')).stdout);
    expect(json).toMatchObject({
      outcome: { outcome: 'issued', approvalsRequired: 0, ttlSeconds: 300 },
      delegation: { rule: 'release-agent', maxTtlSeconds: 300 },
      lifetime: { seconds: 300, from: { kind: 'delegation', rule: 'release-agent' } },
      scopes: [{ scope: 'artifacts:read', grantedBy: 'ml-eng', policies: [{ policy: 'ml-eng', grants: true }], requireDpop: false, approvals: 0 }],
    });
    const rogue = await explain(...args.map((arg) => (arg === 'agent:release-1' ? 'agent:rogue-1' : arg)));
    expect(rogue.stdout).toMatch(/^delegation REFUSED: No delegation rule lets agent:rogue-1/m);
  });

  it('names the identity the broker would refuse, and refuses an issuer the configuration lacks: exit 2', async () => {
    const refused = await explain('--issuer', 'ci', '--subject', APP, '--scope', 'artifacts:read', '--audience', registry);
    expect(refused.stdout).toContain('identity   REFUSED: the identity would be refused (401): missing claim repository');
    expect(refused.stdout).toContain('  policy      not judged: the identity would be refused');
    const unknown = await explain('--issuer', 'github', '--subject', APP, '--scope', 'artifacts:read', '--audience', registry);
    expect(unknown).toMatchObject({ code: 2, stdout: '' });
    expect(unknown.stderr).toContain('no identity issuer is named "github" (have: ci, sso, agents)');
  });
});
