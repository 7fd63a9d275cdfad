import { execFileSync, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { brokerBundle, ROOT } from './bundle.js';

/** A broker process, as `npm start` runs it (src/ bundled, see bundle.ts); its output kept. */
export interface BrokerProcess {
  child: ReturnType<typeof spawn>;
  output: { stdout: string; stderr: string };
  exited: Promise<number | null>;
  /** The JSON log lines written so far. */
  lines(): Record<string, unknown>[];
}

/**
 * Spawns the broker with `args`. `env` replaces the environment entirely when `replaceEnv` is set
 * (as a container image would), else adds to the test's own.
 */
export async function startProcess(
  args: string[],
  env: Record<string, string> = {},
  options: { replaceEnv?: boolean; cwd?: string } = {},
): Promise<BrokerProcess> {
  const child = spawn(process.execPath, [await brokerBundle(), ...args], {
    env: options.replaceEnv ? env : { ...process.env, ...env },
    cwd: options.cwd ?? ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output = { stdout: '', stderr: '' };
  child.stdout?.on('data', (chunk: Buffer) => (output.stdout += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output.stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const lines = () =>
    output.stdout
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  return { child, output, exited, lines };
}

/** Waits for `check` to hold (an event the process reports, or the state it leaves), polling; fails after `ms`. */
export async function until(check: () => boolean | Promise<boolean>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the process');
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Starts a broker on `configFile` (PORT 0) and resolves with its URL once it listens. */
export async function startBroker(configFile: string, env: Record<string, string> = {}): Promise<BrokerProcess & { url: string }> {
  // A key-encryption key too: a test process gets one only when its test gives it.
  const { PORT: _port, BROKER_DB: _db, BROKER_CONFIG: _config, BROKER_KEY_ENCRYPTION_KEY: _kek, ...inherited } = process.env;
  const broker = await startProcess(['--config', configFile], { ...(inherited as Record<string, string>), LOG_LEVEL: 'info', PORT: '0', ...env }, { replaceEnv: true });
  await until(() => broker.lines().some((line) => line.msg === 'broker listening') || broker.child.exitCode !== null, 30_000);
  const listening = broker.lines().find((line) => line.msg === 'broker listening');
  if (!listening) throw new Error(`the broker did not start:\n${broker.output.stdout}\n${broker.output.stderr}`);
  return { ...broker, url: listening.url as string };
}

/** Writes `config` to `<dir>/<name>.yaml` and starts a broker on it (several may share one database). */
export function startBrokerProcess(dir: string, name: string, config: Record<string, unknown>, env: Record<string, string> = {}) {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, YAML.stringify(config));
  return startBroker(file, env);
}

/** The worker processes of a broker started with several (`listen.workers`); none when it runs alone. */
export const workerPids = (broker: BrokerProcess): number[] =>
  execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(broker.child.pid)], { encoding: 'utf8' })
    .split('\n')
    .filter((line) => line.includes('broker.mjs'))
    .map((line) => Number(line.trim().split(/\s+/)[0]));

/** A crash of the whole broker: every process that writes, then the primary, killed at once. */
export function killBroker(broker: BrokerProcess): void {
  for (const pid of workerPids(broker)) process.kill(pid, 'SIGKILL');
  broker.child.kill('SIGKILL');
}
