import { execFileSync } from 'node:child_process';
import { closeSync, constants, existsSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseConfig, createTestIssuers, type TestIssuers } from '../helpers/broker.js';
import { startBrokerProcess, startProcess, until, workerPids, type BrokerProcess } from '../helpers/process.js';

/**
 * A signal that arrives while the broker starts (CONTRACT section 7: SIGHUP reloads, SIGTERM
 * stops cleanly). To hold a broker in the middle of its start, the person issuer's `jwksFile` is
 * a named pipe: the broker reads it once its store is open, and waits there until the test writes
 * the keys. The test knows when it waits: a pipe opens for writing, without blocking, only once a
 * reader has it open.
 */

let dir: string;
let issuers: TestIssuers;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'jit-start-signals-'));
  issuers = await createTestIssuers();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A configuration of its own directory, whose person issuer's keys are read from `<home>/sso-jwks`. */
const setUp = (name: string, extra: Record<string, unknown> = {}) => {
  const home = join(dir, name);
  mkdirSync(home);
  const config = { ...baseConfig(home, issuers), ...extra } as Record<string, any>;
  const sso = config.identity.issuers[1];
  delete sso.jwks;
  sso.jwksFile = join(home, 'sso-jwks');
  return { config, jwksFile: sso.jwksFile as string, configFile: join(home, 'broker.yaml'), database: config.database as string };
};
const makePipe = (path: string) => {
  rmSync(path, { force: true });
  execFileSync('mkfifo', [path]);
};

/** Resolves once `broker` (one of its processes) has `pipe` open to read, with the end to write the keys into. */
const readerWaiting = async (pipe: string, broker: BrokerProcess): Promise<number> => {
  let writer: number | undefined;
  await until(() => {
    if (broker.child.exitCode !== null || broker.child.signalCode !== null) throw new Error(`the broker ended first:\n${broker.output.stdout}`);
    try {
      writer = openSync(pipe, constants.O_WRONLY | constants.O_NONBLOCK);
      return true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENXIO') return false; // no reader yet
      throw error;
    }
  });
  return writer as number;
};
const giveKeys = (writer: number) => {
  writeSync(writer, JSON.stringify(issuers.sso.jwks));
  closeSync(writer);
};

const startOn = (configFile: string) => {
  const { PORT: _port, BROKER_DB: _db, BROKER_CONFIG: _config, BROKER_KEY_ENCRYPTION_KEY: _kek, ...inherited } = process.env;
  return startProcess(['--config', configFile], { ...(inherited as Record<string, string>), LOG_LEVEL: 'info', PORT: '0' }, { replaceEnv: true });
};
const logged = (broker: BrokerProcess, msg: string) => broker.lines().filter((line) => line.msg === msg);
const ended = (broker: BrokerProcess) => broker.child.exitCode !== null || broker.child.signalCode !== null;
const lineOrEnd = (broker: BrokerProcess, msg: string) => until(() => logged(broker, msg).length > 0 || ended(broker));

describe('a signal while a broker of one process starts', () => {
  it('SIGHUP is remembered, and the file reloaded once the broker listens', async () => {
    const { config, configFile, jwksFile } = setUp('hup', { listen: { workers: 1 } });
    makePipe(jwksFile);
    writeFileSync(configFile, YAML.stringify(config));
    const broker = await startOn(configFile);
    try {
      const writer = await readerWaiting(jwksFile, broker);
      // It started from the file as it was; the operator saves a change and asks for a reload.
      writeFileSync(configFile, YAML.stringify({ ...config, scopes: [...config.scopes, { name: 'reports:read', risk: 'low', maxTtl: '5m' }] }));
      broker.child.kill('SIGHUP');
      giveKeys(writer);
      // The reload reads the keys again: from a plain file, the broker has the pipe open already.
      rmSync(jwksFile);
      writeFileSync(jwksFile, JSON.stringify(issuers.sso.jwks));

      await lineOrEnd(broker, 'configuration reloaded');
      expect(broker.child.signalCode).toBeNull();
      expect(logged(broker, 'broker listening')).toHaveLength(1);
      expect(logged(broker, 'configuration reloaded')).toEqual([expect.objectContaining({ changed: ['scopes'] })]);

      broker.child.kill('SIGTERM');
      expect(await broker.exited).toBe(0);
    } finally {
      if (!ended(broker)) broker.child.kill('SIGKILL');
    }
  });

  it('SIGTERM stops it once its store is open, closing the store', async () => {
    const { config, configFile, jwksFile, database } = setUp('term', { listen: { workers: 1 } });
    makePipe(jwksFile);
    writeFileSync(configFile, YAML.stringify(config));
    const broker = await startOn(configFile);
    try {
      const writer = await readerWaiting(jwksFile, broker);
      broker.child.kill('SIGTERM');
      giveKeys(writer);

      expect(await broker.exited).toBe(0);
      expect(logged(broker, 'stopped')).toHaveLength(1);
      // Closed: SQLite folds its write-ahead log back into the file when the last connection closes.
      expect(existsSync(database)).toBe(true);
      expect(existsSync(`${database}-wal`)).toBe(false);
    } finally {
      if (!ended(broker)) broker.child.kill('SIGKILL');
    }
  });
});

describe('a signal while a worker of several starts', () => {
  it('SIGHUP to the worker is ignored, as once it listens; SIGTERM to the primary lets it close its store', async () => {
    const { config, jwksFile } = setUp('workers', { listen: { workers: 2 } });
    writeFileSync(jwksFile, JSON.stringify(issuers.sso.jwks));
    const broker = await startBrokerProcess(join(dir, 'workers'), 'broker', config);
    try {
      /** The workers running; none once the primary, or every worker, has gone (ps then fails). */
      const workersNow = () => {
        try {
          return workerPids(broker);
        } catch {
          return [];
        }
      };
      await until(() => logged(broker, 'worker listening').length === 2);
      // From now on a worker that starts waits for its keys; the two running ones have theirs.
      makePipe(jwksFile);
      /** Kills a worker, and resolves with its replacement's pid once that one waits in its start. */
      const replaceAWorker = async () => {
        const before = workersNow();
        process.kill(before[0] as number, 'SIGKILL');
        await until(() => workersNow().length === 2 && !workersNow().includes(before[0] as number));
        const replacement = workersNow().find((pid) => !before.includes(pid)) as number;
        return { replacement, writer: await readerWaiting(jwksFile, broker) };
      };

      const listening = logged(broker, 'worker listening').length;
      const hungUp = await replaceAWorker();
      process.kill(hungUp.replacement, 'SIGHUP');
      giveKeys(hungUp.writer);
      await until(() => logged(broker, 'worker listening').length > listening || !workersNow().includes(hungUp.replacement));
      expect(workersNow()).toContain(hungUp.replacement);
      const died = logged(broker, 'a worker died; starting another');
      expect(died, JSON.stringify(broker.lines())).toHaveLength(1); // the one the test killed

      const stopped = await replaceAWorker();
      broker.child.kill('SIGTERM');
      // The primary has sent SIGTERM to both workers once the one already serving says it stops.
      await until(() => logged(broker, 'stopping: finishing in-flight requests').length > 0 || !workersNow().includes(stopped.replacement));
      expect(workersNow()).toContain(stopped.replacement);
      giveKeys(stopped.writer);
      expect(await broker.exited).toBe(0);
      expect(logged(broker, 'stopped').filter((line) => line.worker !== undefined)).toHaveLength(2);
    } finally {
      if (!ended(broker)) broker.child.kill('SIGKILL');
    }
  }, 60_000);
});
