import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileGlob } from '../../src/identity/index.js';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';

/** CONTRACT sections 1 ("Issuer shapes") and 2 (`match`): globs, nested claims, values as text. */

describe('compileGlob', () => {
  it('matches exact strings exactly', () => {
    const exact = compileGlob('refs/heads/main');
    expect(exact('refs/heads/main')).toBe(true);
    expect(exact('refs/heads/main2')).toBe(false);
    expect(exact('xrefs/heads/main')).toBe(false);
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
});

describe('matching through the app', () => {
  let t: TestBroker;
  const train = { task_id: 'train-1', scopes: ['model:train'], audience: 'registry.acme.internal' };

  beforeAll(async () => {
    t = await startTestBroker({
      configure(config) {
        (config.policies as unknown[]).push({ id: 'envs', match: { issuer: 'ci', subject: 'env:*', claims: { environment: '*-*-*-prod' } }, scopes: ['model:train'] });
      },
    });
  });
  afterAll(async () => {
    await t.close();
  });
  const ask = async (claims: Record<string, unknown>, sub: string) => t.http.post('/v1/credentials').set(bearer(await t.as.pipeline(claims, sub))).send(train);

  it('answers a 5,000-character claim against *-*-*-prod at once (the attacker\'s backtracking claim)', async () => {
    expect((await ask({ environment: 'eu-west-1-prod' }, 'env:eu')).status).toBe(201); // the control, and a warm-up
    const claims: [string, number][] = [
      ['-'.repeat(5_000), 403], // what makes a backtracking matcher try every way to place three dashes
      [`${'x'.repeat(4_995)}-prod`, 403], // the right ending, too few dashes before it
      [`${'-'.repeat(4_995)}prod!`, 403],
      [`${'-'.repeat(4_996)}prod`, 201],
    ];
    for (const [environment, status] of claims) {
      expect(environment.length).toBeGreaterThanOrEqual(5_000);
      const token = await t.as.pipeline({ environment }, 'env:eu');
      const started = performance.now();
      const response = await t.http.post('/v1/credentials').set(bearer(token)).send(train);
      const elapsed = performance.now() - started;
      expect(response.status).toBe(status);
      expect(elapsed).toBeLessThan(100);
    }
  });
});
