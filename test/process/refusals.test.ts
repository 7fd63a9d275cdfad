import { readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import YAML from 'yaml';
import { describe, expect, it } from 'vitest';
import { baseConfig, createTestIssuers } from '../helpers/broker.js';
import { startBroker, startProcess, until, type BrokerProcess } from '../helpers/process.js';
import { tempDir } from '../helpers/temp.js';

/**
 * A start the operator must fix is refused as an invalid file is (exit 78, one line on stderr, no
 * stack trace), and with several workers the primary stops rather than starting them again.
 */

const cleanEnv = () => {
  const { PORT: _port, BROKER_DB: _db, BROKER_CONFIG: _config, BROKER_KEY_ENCRYPTION_KEY: _kek, LOG_LEVEL: _level, ...rest } = process.env;
  return rest as Record<string, string>;
};
const refusedCleanly = async (broker: BrokerProcess, says: RegExp) => {
  expect(await broker.exited).toBe(78);
  expect(broker.output.stderr).toMatch(says);
  expect(broker.output.stderr.trim().split('\n')).toHaveLength(1);
  expect(broker.output.stdout + broker.output.stderr).not.toMatch(/\n\s+at |"stack"/);
};

async function configFile(workers: number) {
  const dir = tempDir('jit-refusals-');
  const file = join(dir, 'broker.yaml');
  writeFileSync(file, YAML.stringify({ ...baseConfig(dir, await createTestIssuers()), listen: { workers } }));
  return { dir, file };
}

describe('a start refused', () => {
  it('on a database a newer release migrated: exit 78, one line, and no worker started again', { timeout: 60_000 }, async () => {
    const { dir, file } = await configFile(1);
    const first = await startBroker(file);
    first.child.kill('SIGTERM');
    expect(await first.exited).toBe(0);
    const db = new Database(join(dir, 'broker.db'));
    db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(999, '999_future.sql', new Date().toISOString());
    db.close();

    await refusedCleanly(await startProcess(['--config', file], { ...cleanEnv(), PORT: '0' }, { replaceEnv: true }), /schema version 999/);
    const config = YAML.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    writeFileSync(file, YAML.stringify({ ...config, listen: { workers: 2 } }));
    const several = await startProcess(['--config', file], { ...cleanEnv(), PORT: '0' }, { replaceEnv: true });
    expect(await several.exited).toBe(78);
    expect(several.lines().filter((line) => line.msg === 'a worker died; starting another')).toEqual([]);
  });

  it('on a LOG_LEVEL that is no level', async () => {
    const { file } = await configFile(1);
    await refusedCleanly(await startProcess(['--config', file], { ...cleanEnv(), PORT: '0', LOG_LEVEL: 'verbose' }, { replaceEnv: true }), /LOG_LEVEL "verbose" is not a log level/);
  });

  it('on an address in use', async () => {
    const { file } = await configFile(1);
    const taken = createServer();
    await new Promise<void>((done) => taken.listen(0, '127.0.0.1', done));
    try {
      const port = String((taken.address() as { port: number }).port);
      await refusedCleanly(await startProcess(['--config', file], { ...cleanEnv(), PORT: port }, { replaceEnv: true }), new RegExp(`cannot listen on 127.0.0.1:${port} \\(EADDRINUSE\\)`));
    } finally {
      await new Promise((done) => taken.close(done));
    }
  });
});

describe('SIGTERM', () => {
  it('lets a request in flight finish: its answer arrives, then the broker exits 0', async () => {
    const { file } = await configFile(1);
    const broker = await startBroker(file);
    const { port, hostname } = new URL(broker.url);
    const socket = connect(Number(port), hostname);
    let answer = '';
    socket.on('data', (chunk: Buffer) => (answer += chunk.toString()));
    socket.on('error', () => {});
    const closed = new Promise((done) => socket.on('close', done));
    await new Promise((done) => socket.on('connect', done));
    const body = JSON.stringify({ task_id: 't', scopes: ['artifacts:read'], audience: 'x' });
    // Half the request sent, then the signal, then the rest.
    socket.write(`POST /v1/credentials HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body.slice(0, 5)}`);
    await until(() => broker.lines().length > 0);
    broker.child.kill('SIGTERM');
    await until(() => broker.output.stdout.includes('stopping'));
    socket.write(body.slice(5));
    await closed;
    expect(answer).toMatch(/^HTTP\/1.1 401/); // no bearer: refused, but answered
    expect(await broker.exited).toBe(0);
  });
});
