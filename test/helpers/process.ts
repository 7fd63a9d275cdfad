import { spawn } from 'node:child_process';

/** A broker process, as `npm start` runs it but from src/ through tsx; its output kept. */
export interface BrokerProcess {
  child: ReturnType<typeof spawn>;
  output: { stdout: string; stderr: string };
  exited: Promise<number | null>;
  /** The JSON log lines written so far. */
  lines(): Record<string, unknown>[];
}

/**
 * Spawns `entry` (default src/main.ts) with `args`. `env` replaces the environment entirely when
 * `replaceEnv` is set (as a container image would), else adds to the test's own.
 */
export function startProcess(
  args: string[],
  env: Record<string, string> = {},
  options: { entry?: string; replaceEnv?: boolean } = {},
): BrokerProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', options.entry ?? 'src/main.ts', ...args], {
    env: options.replaceEnv ? env : { ...process.env, ...env },
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

/** Waits for `check` to hold (an event the process reports), polling; fails after `ms`. */
export async function until(check: () => boolean, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the process');
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Starts a broker on `configFile` (PORT 0) and resolves with its URL once it listens. */
export async function startBroker(configFile: string, env: Record<string, string> = {}): Promise<BrokerProcess & { url: string }> {
  const broker = startProcess(['--config', configFile], { PORT: '0', ...env });
  await until(() => broker.lines().some((line) => line.msg === 'broker listening') || broker.child.exitCode !== null);
  const listening = broker.lines().find((line) => line.msg === 'broker listening');
  if (!listening) throw new Error(`the broker did not start:\n${broker.output.stdout}\n${broker.output.stderr}`);
  return { ...broker, url: listening.url as string };
}
