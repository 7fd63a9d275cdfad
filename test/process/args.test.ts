import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readCommandLine } from '../../src/process/args.js';
import { baseConfig, createTestIssuers } from '../helpers/broker.js';
import { runCli } from '../helpers/cli.js';
import { startProcess } from '../helpers/process.js';

/** The broker's own command line: flags that say what to do, and nothing started by mistake. */
describe('the broker command line', () => {
  const version = (JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }).version;
  let dir: string;
  let valid: string;
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'jit-args-test-'));
    valid = join(dir, 'broker.yaml');
    writeFileSync(valid, YAML.stringify(baseConfig(dir, await createTestIssuers())));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('starts on --config FILE, else BROKER_CONFIG, else config/broker.yaml', async () => {
    expect(await readCommandLine(['--config', 'a.yaml'], { BROKER_CONFIG: 'b.yaml' })).toEqual({ start: { configFile: 'a.yaml' } });
    expect(await readCommandLine(['--config=a.yaml'], {})).toEqual({ start: { configFile: 'a.yaml' } });
    expect(await readCommandLine([], { BROKER_CONFIG: 'b.yaml' })).toEqual({ start: { configFile: 'b.yaml' } });
    expect(await readCommandLine([], {})).toEqual({ start: { configFile: 'config/broker.yaml' } });
  });

  it.each([
    [['--chek-config', 'prod.yaml'], /Unknown option '--chek-config'/],
    [['prod.yaml'], /Unexpected argument 'prod.yaml'/],
    [['--config'], /--config <value>' argument missing/],
    [['-x'], /Unknown option '-x'/],
  ])('refuses %j with exit 64 and a pointer to --help', async (argv, message) => {
    const command = await readCommandLine(argv, {});
    expect(command).toEqual({ exit: { code: 64, stderr: expect.stringMatching(message) } });
    expect('exit' in command && command.exit.stderr).toContain('Try --help.');
  });

  it('validates a file with --check-config, reading the files it names, and starts nothing', async () => {
    expect(await readCommandLine(['--check-config', valid], {})).toEqual({ exit: { code: 0, stdout: `${valid}: valid (2 issuers, 5 scopes, 4 policies)\n` } });

    const raw = baseConfig(dir, await createTestIssuers()) as Record<string, any>;
    delete raw.identity.issuers[1].jwks;
    raw.identity.issuers[1].jwksFile = join(dir, 'missing-jwks.json');
    raw.notify = { webhooks: [{ url: 'https://hooks.example/x', events: ['approval.requested'], secretFile: join(dir, 'missing.secret') }] };
    const broken = join(dir, 'broken.yaml');
    writeFileSync(broken, YAML.stringify(raw));
    const command = await readCommandLine(['--check-config', broken], {});
    expect(command).toMatchObject({ exit: { code: 78, stderr: expect.stringContaining('jwksFile is not a readable JWKS') } });

    writeFileSync(join(dir, 'missing-jwks.json'), '{"keys": []}');
    expect(await readCommandLine(['--check-config', broken], {})).toMatchObject({ exit: { code: 78, stderr: expect.stringContaining('notify.webhooks.0.secretFile') } });
  });

  it('applies the env overrides and the development-issuer rule in --check-config, as a start would', async () => {
    expect(await readCommandLine(['--check-config', valid], { PORT: 'eighty' })).toMatchObject({
      exit: { code: 78, stderr: expect.stringContaining('listen.port (from env PORT): Invalid input: expected number, received string') },
    });
    expect(await readCommandLine(['--check-config', 'config/broker.yaml'], { NODE_ENV: 'production' })).toMatchObject({
      exit: { code: 78, stderr: expect.stringContaining('"dev-ci" is a development issuer, refused where NODE_ENV=production') },
    });
    expect(await readCommandLine(['--check-config', 'config/broker.yaml'], { NODE_ENV: 'production', BROKER_ALLOW_DEV_ISSUERS: 'true' })).toMatchObject({
      exit: { code: 0 },
    });
  });

  it('runs the file\'s own policyTests in --check-config and jit config check; a start refuses a file whose cases fail (exit 78)', async () => {
    const pipelineCase = (outcome: string) => ({
      name: 'a pipeline reads artifacts',
      identity: { issuer: 'ci', subject: 'repo:acme/app:ref:refs/heads/main', claims: { repository: 'acme/app', actor: 'pat' } },
      request: { scopes: ['artifacts:read'], audience: 'registry.acme.internal' },
      expect: { outcome },
    });
    const tested = (name: string, outcome: string) => {
      writeFileSync(join(dir, `${name}.cases.yaml`), YAML.stringify({ cases: [pipelineCase(outcome)] }));
      const file = join(dir, `${name}.yaml`);
      writeFileSync(file, YAML.stringify({ ...YAML.parse(readFileSync(valid, 'utf8')), policyTests: `${name}.cases.yaml` }));
      return file;
    };
    const passing = tested('passing', 'issued');
    expect(await readCommandLine(['--check-config', passing], {})).toEqual({
      exit: { code: 0, stdout: `${passing}: valid (2 issuers, 5 scopes, 4 policies; policy tests: 1 passed)\n` },
    });
    const failing = tested('failing', 'policy_denied');
    const problem = `policyTests: case "a pipeline reads artifacts" (${join(dir, 'failing.cases.yaml')}:2): expected policy_denied, got issued, 900 s`;
    expect(await readCommandLine(['--check-config', failing], {})).toEqual({ exit: { code: 78, stderr: `${failing}: invalid configuration\n  - ${problem}\n  - policyTests: 1 case: 0 passed, 1 failed\n` } });
    expect(await runCli(['config', 'check', failing])).toEqual({ code: 78, stdout: '', stderr: `${failing}: invalid configuration\n  - ${problem}\n  - policyTests: 1 case: 0 passed, 1 failed\n` });
    expect(await runCli(['config', 'check', passing])).toMatchObject({ code: 0, stdout: `${passing}: valid (2 issuers, 5 scopes, 4 policies; policy tests: 1 passed)\n` });

    // A real start on it: refused before the database is touched, the case named.
    const { PORT: _port, BROKER_DB: _db, BROKER_CONFIG: _config, ...inherited } = process.env;
    const start = await startProcess(['--config', failing], { ...(inherited as Record<string, string>), PORT: '0' }, { replaceEnv: true });
    expect(await start.exited).toBe(78);
    expect(start.output.stderr).toContain(problem);
    expect(existsSync(join(dir, 'broker.db'))).toBe(false);
  });

  it('as a process: --help and --version print and exit 0; an unknown flag exits 64 before anything starts', async () => {
    const help = await startProcess(['--help'], { BROKER_CONFIG: join(dir, 'no-such-file.yaml') });
    expect(await help.exited).toBe(0);
    expect(help.output.stdout).toContain('--check-config FILE');
    expect(help.output.stdout).toContain('SIGHUP');

    const shown = await startProcess(['--version']);
    expect(await shown.exited).toBe(0);
    expect(shown.output.stdout).toBe(`${version}\n`);

    const unknown = await startProcess(['--config', valid, '--port', '9'], { PORT: '0' });
    expect(await unknown.exited).toBe(64);
    expect(unknown.output.stderr).toContain("Unknown option '--port'");
    expect(unknown.output.stdout).toBe('');
  });
});
