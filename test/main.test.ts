import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { baseConfig, createTestIssuers } from './helpers/broker.js';
import { startProcess, until } from './helpers/process.js';
import { tempDir } from './helpers/temp.js';

/** The broker as a process, as `npm start` runs its build, on its default number of workers. */
describe('the broker process', () => {
  it('refuses to start on an invalid file: exit 78, one line per bad field, no stack trace', async () => {
    const dir = tempDir('jit-main-test-');
    const config = baseConfig(dir, await createTestIssuers()) as Record<string, any>;
    config.clockSkew = 'later';
    config.listen = { port: 'eighty' };
    writeFileSync(join(dir, 'bad.yaml'), YAML.stringify(config));
    const { output, exited } = await startProcess(['--config', join(dir, 'bad.yaml')]);
    expect(await exited).toBe(78);
    expect(output.stderr).toContain('  - clockSkew: "later" is not a duration such as 30s, 15m, 1h or 7d');
    expect(output.stderr).toContain('  - listen.port: Invalid input: expected number, received string');
    expect(output.stdout + output.stderr).not.toMatch(/\n\s+at /);
    expect(JSON.parse(output.stdout.trim().split('\n')[0] as string)).toMatchObject({ level: 'fatal', problems: expect.any(Array) });
  });

  it('logs where it listens, serves, and stops cleanly on SIGTERM', async () => {
    const dir = tempDir('jit-main-test-');
    writeFileSync(join(dir, 'ok.yaml'), YAML.stringify(baseConfig(dir, await createTestIssuers())));
    const { child, output, exited } = await startProcess([], { BROKER_CONFIG: join(dir, 'ok.yaml'), PORT: '0' });
    await until(() => output.stdout.includes('broker listening'));
    const listening = output.stdout.split('\n').find((line) => line.includes('broker listening')) as string;
    const { url } = JSON.parse(listening) as { url: string };
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    expect((await fetch(`${url}/readyz`)).status).toBe(200);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(output.stdout).toContain('"msg":"stopped"');
  });
});
