import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig, type MatchConfig } from '../../src/config/index.js';
import { compileGlob, compileMatch, type Matchable } from '../../src/identity/index.js';
import { baseConfig, bearer, createTestIssuers, startTestBroker, type TestBroker } from '../helpers/broker.js';

/** CONTRACT sections 1 ("Issuer shapes") and 2 (`match`): globs, nested claims, values as text. */

const issuers = await createTestIssuers();

/** A `match` as the configuration loader makes it, so numbers and booleans arrive as the schema turns them. */
function matcher(claims: Record<string, unknown>, subject?: string) {
  const raw = baseConfig('/tmp/unused', issuers) as Record<string, any>;
  raw.policies[0].match = { issuer: 'ci', ...(subject ? { subject } : {}), claims };
  const match = parseConfig('test', raw).policies[0]?.match as MatchConfig;
  const compiled = compileMatch(match);
  return (claimsOfToken: Record<string, unknown>, sub = 'repo:acme/app') => compiled({ idp: 'ci', sub, claims: claimsOfToken } satisfies Matchable);
}

describe('compileGlob', () => {
  it('matches exact strings exactly', () => {
    const exact = compileGlob('refs/heads/main');
    expect(exact('refs/heads/main')).toBe(true);
    expect(exact('refs/heads/main2')).toBe(false);
    expect(exact('xrefs/heads/main')).toBe(false);
    // Another spelling is another value: letter case included.
    expect(exact('Refs/heads/main')).toBe(false);
    expect(matcher({ repository: 'acme/app' })({ repository: 'ACME/app' })).toBe(false);
  });

  it('matches only tokens of its issuer, whatever their subject and claims', () => {
    const compiled = compileMatch({ issuer: 'ci', subject: 'repo:acme/*' } as MatchConfig);
    expect(compiled({ idp: 'ci', sub: 'repo:acme/app', claims: {} })).toBe(true);
    expect(compiled({ idp: 'sso', sub: 'repo:acme/app', claims: {} })).toBe(false);
  });

  it('lets * match any run of characters, the empty run included, anchored at both ends', () => {
    expect(compileGlob('repo:acme/*')('repo:acme/')).toBe(true);
    expect(compileGlob('repo:acme/*')('repo:acme/app:ref:refs/heads/main')).toBe(true);
    expect(compileGlob('repo:acme/*')('xrepo:acme/app')).toBe(false);
    expect(compileGlob('*:main')('repo:x:main')).toBe(true);
    expect(compileGlob('*:main')('repo:x:main:no')).toBe(false);
    expect(compileGlob('*')('')).toBe(true);
    expect(compileGlob('a**b')('ab')).toBe(true);
    expect(compileGlob('*-*-*-prod')('eu-west-1-prod')).toBe(true);
    expect(compileGlob('*-*-*-prod')('---prod')).toBe(true);
    expect(compileGlob('*-*-*-prod')('eu-west-prod')).toBe(false);
    expect(compileGlob('*\n*')('a\nb')).toBe(true);
  });

  it('never lets the first and last parts overlap', () => {
    expect(compileGlob('a*a')('a')).toBe(false);
    expect(compileGlob('a*a')('aa')).toBe(true);
    expect(compileGlob('ab*bc')('abc')).toBe(false);
    expect(compileGlob('ab*b*bc')('abbc')).toBe(false);
    expect(compileGlob('ab*b*bc')('abbbc')).toBe(true);
  });

  it('finds middle parts leftmost, which is never wrong for *-only globs', () => {
    expect(compileGlob('*ab*abc')('ababc')).toBe(true);
    expect(compileGlob('x*aa*aab*y')('xaaaby')).toBe(false);
    expect(compileGlob('x*aa*aab*y')('xaaaaby')).toBe(true);
    expect(compileGlob('*a*b*c*')('cbacba')).toBe(false);
    expect(compileGlob('*a*b*c*')('cbabca')).toBe(true);
  });

  it('takes every other character literally: no regular expression hides in a pattern', () => {
    expect(compileGlob('a.b')('axb')).toBe(false);
    expect(compileGlob('a.b')('a.b')).toBe(true);
    expect(compileGlob('(x)+*')('(x)+y')).toBe(true);
    expect(compileGlob('(x)+*')('xx')).toBe(false);
    expect(compileGlob('[ab]*')('a')).toBe(false);
    expect(compileGlob('?')('a')).toBe(false);
    expect(compileGlob('^a$|*')('anything')).toBe(false);
  });

  it('searches the value once per middle part, whatever it holds: never backtracks (the attacker\'s claim)', () => {
    /** The value, counting the searches made in it. */
    class Searched extends String {
      searches = 0;
      override indexOf(part: string, from?: number): number {
        this.searches += 1;
        return super.indexOf(part, from);
      }
    }
    const glob = compileGlob('*-*-*-*-prod'); // three middle parts: '-', '-', '-'
    const values: [string, boolean][] = [
      ['eu-west-1-a-prod', true], // first, short: a matcher that does not search the value this way fails here, not by hanging below
      ['-'.repeat(200_000), false], // every placement of four dashes, to a backtracking matcher
      [`${'x'.repeat(199_995)}-prod`, false],
      [`${'-'.repeat(199_995)}prod!`, false],
      [`${'-'.repeat(199_996)}prod`, true],
      [`${'x-'.repeat(99_998)}prod`, true],
    ];
    for (const [text, matches] of values) {
      const value = new Searched(text);
      expect(glob(value as unknown as string)).toBe(matches);
      expect(value.searches).toBeLessThanOrEqual(3);
      if (matches) expect(value.searches).toBe(3);
    }
  });
});

describe('claims in a match', () => {
  it('compares numbers and booleans as their JSON text', () => {
    const match = matcher({ run_attempt: 1, fork: false, pr: '12*' });
    expect(match({ run_attempt: 1, fork: false, pr: 1234 })).toBe(true);
    expect(match({ run_attempt: '1', fork: 'false', pr: '1234' })).toBe(true);
    expect(match({ run_attempt: 2, fork: false, pr: 1234 })).toBe(false);
    expect(match({ run_attempt: 1, fork: 0, pr: 1234 })).toBe(false);
    expect(match({ run_attempt: 1.5, fork: false, pr: 1234 })).toBe(false);
    expect(match({ run_attempt: true, fork: false, pr: 1234 })).toBe(false);
  });

  it('matches an array claim when any string, number or boolean element matches; never an element that is an array or object', () => {
    const match = matcher({ groups: 'ml-*' });
    expect(match({ groups: ['ops', 'ml-release'] })).toBe(true);
    expect(match({ groups: ['ops'] })).toBe(false);
    expect(match({ groups: [] })).toBe(false);
    expect(match({ groups: [['ml-release']] })).toBe(false);
    expect(match({ groups: [{ name: 'ml-release' }] })).toBe(false);
    expect(matcher({ ids: 7 })({ ids: [3, 7] })).toBe(true);
  });

  it('never matches an object, null or a missing claim with a string', () => {
    const match = matcher({ repository: '*' });
    expect(match({ repository: 'acme/app' })).toBe(true);
    expect(match({ repository: { name: 'acme/app' } })).toBe(false);
    expect(match({ repository: null })).toBe(false);
    expect(match({})).toBe(false);
    expect(match({ repository: ['acme/app', { x: 1 }] })).toBe(true);
  });

  it('matches a map member by member, at any depth', () => {
    const match = matcher({ 'kubernetes.io': { namespace: 'prod', serviceaccount: { name: 'deploy*' } } });
    const claims = (namespace: unknown, name: unknown) => ({ 'kubernetes.io': { namespace, serviceaccount: { name, uid: 'u-1' }, pod: { name: 'p' } } });
    expect(match(claims('prod', 'deployer'))).toBe(true);
    expect(match(claims('staging', 'deployer'))).toBe(false);
    expect(match(claims('prod', 'builder'))).toBe(false);
    expect(match({ 'kubernetes.io': { namespace: 'prod' } })).toBe(false);
    expect(match(claims(['prod', 'x'], 'deployer'))).toBe(true);
  });

  it('never takes a key for a path: a top-level claim with dots in its name is another claim', () => {
    const match = matcher({ 'kubernetes.io': { namespace: 'prod' } });
    // The attacker sets a flat claim spelled like the nested one.
    expect(match({ 'kubernetes.io.namespace': 'prod' })).toBe(false);
    expect(match({ kubernetes: { io: { namespace: 'prod' } } })).toBe(false);
    expect(match({ 'kubernetes.io': { 'namespace.x': 'prod' } })).toBe(false);
    // And the reverse: a key with dots names a claim with dots, never a nested one.
    const dotted = matcher({ 'kubernetes.io.namespace': 'prod' });
    expect(dotted({ 'kubernetes.io.namespace': 'prod' })).toBe(true);
    expect(dotted({ 'kubernetes.io': { namespace: 'prod' } })).toBe(false);
  });

  it('never matches a map with a string, a number, an array, or an array of matching objects', () => {
    const match = matcher({ 'kubernetes.io': { namespace: 'prod' } });
    for (const value of ['prod', '{"namespace":"prod"}', 1, true, null, [{ namespace: 'prod' }], [['prod']]]) {
      expect(match({ 'kubernetes.io': value }), JSON.stringify(value)).toBe(false);
    }
  });

  it('looks up own members only: a claim name that is also an Object.prototype member needs the claim', () => {
    const match = matcher({ constructor: '*', toString: { name: '*' } });
    expect(match({})).toBe(false);
    expect(match({ constructor: 'x', toString: { name: 'y' } })).toBe(true);
    // `__proto__` would vanish from a parsed map (it sets the prototype), widening the rule: refused at load.
    expect(() => matcher(JSON.parse('{"kubernetes.io": {"__proto__": {"name": "x"}, "namespace": "prod"}}'))).toThrow(
      /policies\.0\.match\.claims\.kubernetes\.io\.__proto__: never a valid key/,
    );
  });
});

describe('matching through the app', () => {
  let t: TestBroker;
  const train = { task_id: 'train-1', scopes: ['model:train'], audience: 'registry.acme.internal' };
  const k8s = 'system:serviceaccount:prod:deployer';

  beforeAll(async () => {
    t = await startTestBroker({
      configure(config) {
        (config.policies as unknown[]).push(
          { id: 'k8s-prod', match: { issuer: 'ci', subject: 'system:serviceaccount:*', claims: { 'kubernetes.io': { namespace: 'prod', serviceaccount: { name: 'deployer' } } } }, scopes: ['model:train'] },
          { id: 'envs', match: { issuer: 'ci', subject: 'env:*', claims: { environment: '*-*-*-prod' } }, scopes: ['model:train'] },
        );
      },
    });
  });
  afterAll(async () => {
    await t.close();
  });
  const ask = async (claims: Record<string, unknown>, sub = k8s) => t.http.post('/v1/credentials').set(bearer(await t.as.pipeline(claims, sub))).send(train);

  it('grants on a nested claim that matches, and refuses the same values spelled as a flat claim name', async () => {
    expect((await ask({ 'kubernetes.io': { namespace: 'prod', serviceaccount: { name: 'deployer', uid: '9f' } } })).status).toBe(201);
    const flat = await ask({ 'kubernetes.io.namespace': 'prod', 'kubernetes.io.serviceaccount.name': 'deployer' });
    expect(flat.status).toBe(403);
    expect(flat.body.type).toMatch(/policy_denied$/);
    expect((await ask({ 'kubernetes.io': { namespace: 'staging', serviceaccount: { name: 'deployer' } } })).status).toBe(403);
    expect((await ask({ 'kubernetes.io': '{"namespace":"prod","serviceaccount":{"name":"deployer"}}' })).status).toBe(403);
  });

  it('answers 5,000-character claims against *-*-*-prod (the attacker\'s backtracking claim) as the glob says', async () => {
    expect((await ask({ environment: 'eu-west-1-prod' }, 'env:eu')).status).toBe(201); // the control
    const claims: [string, number][] = [
      ['-'.repeat(5_000), 403], // what makes a backtracking matcher try every way to place three dashes
      [`${'x'.repeat(4_995)}-prod`, 403], // the right ending, too few dashes before it
      [`${'-'.repeat(4_995)}prod!`, 403],
      [`${'-'.repeat(4_996)}prod`, 201],
    ];
    for (const [environment, status] of claims) {
      expect(environment.length).toBeGreaterThanOrEqual(5_000);
      const token = await t.as.pipeline({ environment }, 'env:eu');
      expect((await t.http.post('/v1/credentials').set(bearer(token)).send(train)).status).toBe(status);
    }
  });
});
