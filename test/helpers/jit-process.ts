import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { jitBundle, ROOT } from './bundle.js';
import { tempDir } from './temp.js';

export { jitBundle } from './bundle.js';

export interface JitResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface JitOptions {
  /** The child's whole environment besides PATH and a fresh, empty JIT_CONFIG_DIR (nothing leaks in from the test's own). */
  env?: NodeJS.ProcessEnv;
  stdin?: string;
  cwd?: string;
  /** Called with the child's stderr as it grows; lets a test act when the CLI reaches a point. */
  onStderr?: (stderr: string) => void;
}

/** Runs `jit ARGS` to its end; the test's process keeps serving the broker meanwhile. */
export async function jit(args: string[], options: JitOptions = {}): Promise<JitResult> {
  const main = await jitBundle();
  const env = { PATH: process.env.PATH, JIT_CONFIG_DIR: emptyConfigDir(), ...options.env };
  const child = spawn(process.execPath, [main, ...args], { env, cwd: options.cwd ?? ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '' };
  child.stdout.on('data', (chunk: Buffer) => (out.stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => {
    out.stderr += chunk.toString();
    options.onStderr?.(out.stderr);
  });
  child.stdin.end(options.stdin ?? '');
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const code = await new Promise<number | null>((done) => child.on('close', (status) => done(status)));
  clearTimeout(timer);
  return { code, ...out };
}

let configDirs: string | undefined;
function emptyConfigDir(): string {
  configDirs ??= tempDir('jit-config-');
  return mkdtempSync(join(configDirs, 'dir-'));
}

/** A command line for a shell script: the bundled CLI, as `jit` would be on PATH. */
export async function jitCommand(): Promise<string> {
  return `${JSON.stringify(process.execPath)} ${JSON.stringify(await jitBundle())}`;
}
