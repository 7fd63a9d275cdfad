import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';

/** A broker as its own process (`node src/main.ts` through tsx), as an operator runs it. */
export interface BrokerProcess {
  child: ChildProcess;
  /** Where it listens (from its "broker listening" log line). */
  url: string;
  output: { stdout: string; stderr: string };
  exited: Promise<number | null>;
}

export async function until(check: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Writes `config` to `<dir>/<name>.yaml` and starts a broker on it, listening on a free port (LOG_LEVEL stays info: its listening line says where). */
export async function startBrokerProcess(dir: string, name: string, config: Record<string, unknown>, env: Record<string, string> = {}): Promise<BrokerProcess> {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(file, YAML.stringify({ ...config, listen: { host: '127.0.0.1', port: 0 } }));
  const { PORT: _port, BROKER_DB: _db, BROKER_CONFIG: _config, ...inherited } = process.env;
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', '--config', file], {
    env: { ...inherited, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output = { stdout: '', stderr: '' };
  child.stdout?.on('data', (chunk: Buffer) => (output.stdout += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output.stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  let url: string | undefined;
  await until(() => {
    if (child.exitCode !== null) throw new Error(`broker ${name} exited: ${output.stderr || output.stdout}`);
    const line = output.stdout.split('\n').find((l) => l.includes('broker listening'));
    if (line) url = (JSON.parse(line) as { url: string }).url;
    return url !== undefined;
  });
  return { child, url: url as string, output, exited };
}
