import { readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
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

  it('refuses to start on a file that is no database: exit 78, one line naming it, no stack trace, the file untouched', async () => {
    const dir = tempDir('jit-main-test-');
    const config = baseConfig(dir, await createTestIssuers()) as Record<string, any>;
    const garbage = Buffer.alloc(8192, 0x41);
    writeFileSync(config.database, garbage);
    writeFileSync(join(dir, 'ok.yaml'), YAML.stringify(config));
    const { output, exited } = await startProcess(['--config', join(dir, 'ok.yaml')], { PORT: '0' });
    expect(await exited).toBe(78);
    // One line (each worker that got that far says the same).
    const said = `jit-broker: the database ${config.database} cannot be used (SQLITE_NOTADB: file is not a database); check the file and its permissions, or restore it from a backup`;
    expect([...new Set(output.stderr.trim().split('\n'))]).toEqual([said]);
    expect(output.stdout + output.stderr).not.toMatch(/\n\s+at /);
    expect(readFileSync(config.database)).toEqual(garbage);
  });

  it('escapes control characters in that line: what it names may come from the database, written by someone else', async () => {
    const dir = tempDir('jit-main-test-');
    const config = baseConfig(dir, await createTestIssuers()) as Record<string, any>;
    config.database = join(dir, 'broker\u001b[2J.db');
    writeFileSync(config.database, Buffer.alloc(8192, 0x41));
    writeFileSync(join(dir, 'ok.yaml'), YAML.stringify(config));
    const { output, exited } = await startProcess(['--config', join(dir, 'ok.yaml')], { PORT: '0' });
    expect(await exited).toBe(78);
    expect(output.stderr).toContain(`the database ${join(dir, 'broker\\u{1b}[2J.db')} cannot be used`);
    expect(output.stderr).not.toContain('\u001b');
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

  it('stops cleanly on SIGTERM while a worker is still loading, before it holds its signals: it had opened nothing', async () => {
    const dir = tempDir('jit-main-test-');
    writeFileSync(join(dir, 'ok.yaml'), YAML.stringify({ ...baseConfig(dir, await createTestIssuers()), listen: { workers: 2 } }));
    // The second worker is held in its loading, before main.ts takes its signals, until SIGTERM ends it.
    const preload = join(dir, 'slow-second-worker.cjs');
    writeFileSync(preload, "const cluster = require('node:cluster'); if (cluster.isWorker && cluster.worker.id === 2) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60000);");
    const { child, output, exited } = await startProcess(['--config', join(dir, 'ok.yaml')], { PORT: '0', NODE_OPTIONS: `--require ${preload}` });
    await until(() => output.stdout.includes('broker listening'));
    child.kill('SIGTERM');
    expect(await exited, output.stdout).toBe(0);
    expect(output.stdout).not.toContain('a worker did not stop cleanly');
  });

  it('answers a request in flight at SIGTERM, closing its keep-alive connection with the answer, and stops cleanly', async () => {
    const dir = tempDir('jit-main-test-');
    const issuers = await createTestIssuers();
    writeFileSync(join(dir, 'ok.yaml'), YAML.stringify(baseConfig(dir, issuers)));
    const { child, output, exited } = await startProcess([], { BROKER_CONFIG: join(dir, 'ok.yaml'), PORT: '0' });
    await until(() => output.stdout.includes('listening'));
    const { url } = JSON.parse(output.stdout.split('\n').find((line) => line.includes('listening')) as string) as { url: string };
    const token = await issuers.ci.token('repo:acme/app:ref:refs/heads/main', { repository: 'acme/app', actor: 'pat' }, { now: Date.now() });
    const body = JSON.stringify({ task_id: 'in-flight', scopes: ['artifacts:read'], audience: 'registry.acme.internal' });
    const { hostname, port } = new URL(url);
    const socket = connect(Number(port), hostname);
    await new Promise((resolve) => socket.once('connect', resolve));
    let received = '';
    socket.on('data', (chunk) => (received += chunk.toString()));
    const closedByServer = new Promise((resolve) => socket.once('end', resolve));
    // Headers and half the body before SIGTERM; the rest after it.
    socket.write(`POST /v1/credentials HTTP/1.1\r\nHost: ${url.slice(7)}\r\nConnection: keep-alive\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 10)}`);
    await new Promise((resolve) => setTimeout(resolve, 300));
    child.kill('SIGTERM');
    await until(() => output.stdout.includes('stopping'));
    socket.write(body.slice(10));
    await closedByServer;
    expect(received).toMatch(/^HTTP\/1\.1 201 /);
    expect(received).toMatch(/\r\nConnection: close\r\n/i);
    expect(await exited).toBe(0);
    expect(output.stdout).toContain('"msg":"stopped"');
    expect(output.stdout).not.toContain('did not finish in time');
  });
});
