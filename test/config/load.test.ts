import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, resolveConfigPath } from '../../src/config/index.js';
import { baseConfig, createTestIssuers } from '../helpers/broker.js';

const dir = mkdtempSync(join(tmpdir(), 'jit-config-test-'));
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
    expect(config.identity.issuers.filter((issuer) => issuer.dev).map((issuer) => issuer.name)).toEqual(['dev-ci', 'dev-sso']);
    expect(config.listen).toEqual({ host: '127.0.0.1', port: 8080 });
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
      `identity.issuers.${second.identity.issuers.length - 1}.issuer: duplicate issuer "${second.identity.issuers[1].issuer}": one entry per iss`,
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

  it('names YAML syntax errors and missing files', () => {
    expect(problemsOf(write('syntax.yaml', 'issuer: [unclosed'))[0]).toMatch(/^not valid YAML: /);
    expect(problemsOf(join(dir, 'missing.yaml'))).toEqual(['cannot read the file (ENOENT)']);
  });

  it('takes PORT, HOST and BROKER_DB from the environment over the file', async () => {
    const path = write('env.yaml', baseConfig(dir, await createTestIssuers()));
    const { config } = loadConfig(path, { PORT: '9999', HOST: '0.0.0.0', BROKER_DB: '/tmp/other.db' });
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 9999 });
    expect(config.database).toBe('/tmp/other.db');
    expect(() => loadConfig(path, { PORT: 'eighty' })).toThrow(ConfigError);
  });

  it('finds the file from --config, then BROKER_CONFIG, then the default', () => {
    expect(resolveConfigPath(['--config', 'a.yaml'], { BROKER_CONFIG: 'b.yaml' })).toBe('a.yaml');
    expect(resolveConfigPath(['--config=a.yaml'], {})).toBe('a.yaml');
    expect(resolveConfigPath([], { BROKER_CONFIG: 'b.yaml' })).toBe('b.yaml');
    expect(resolveConfigPath([], {})).toBe('config/broker.yaml');
  });
});
