import { spawn } from 'node:child_process';
import type { CliIo } from '../../src/cli/cli-io.js';
import { runCli } from '../../src/cli/run.js';
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
  /** In-process only: stdout is a terminal (what an export prints is escaped). */
  stdoutTerminal?: boolean;
  /** In-process only: the clock a wait runs on and its sleep, instead of real time and timers. */
  clock?: Pick<CliIo, 'now' | 'sleep'>;
}

/**
 * Runs `jit ARGS` to its end, in this process: the CLI touches the world only through its `CliIo`
 * (src/cli/cli-io.ts), here over real HTTP, files and timers, with what it writes kept. What
 * `jit` as a process adds (src/cli/main.ts: the exit code, a last-resort error line) is the same,
 * and `jitProcess` runs that where a test is about the process itself.
 */
export async function jit(args: string[], options: JitOptions = {}): Promise<JitResult> {
  if (options.cwd !== undefined) return jitProcess(args, options);
  const out = { stdout: '', stderr: '' };
  const io: CliIo = {
    stdout: (text) => void (out.stdout += text),
    stderr: (text) => {
      out.stderr += text;
      options.onStderr?.(out.stderr);
    },
    interactive: false,
    stdoutTerminal: options.stdoutTerminal ?? false,
    env: { PATH: process.env.PATH, JIT_CONFIG_DIR: emptyConfigDir(), ...options.env },
    readStdin: () => options.stdin ?? '',
    confirm: async () => false,
    fetch: (input, init) => fetch(input, init),
    sleep: options.clock?.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms))),
    now: options.clock?.now ?? (() => Date.now()),
  };
  const code = await runCli(args, io);
  return { code, ...out };
}

/** `jit ARGS` as a child process, as a pipeline runs it; the test's process keeps serving the broker meanwhile. */
export async function jitProcess(args: string[], options: JitOptions = {}): Promise<JitResult> {
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

/** A config directory of its own for each call: no profile or login of another test leaks in. */
const emptyConfigDir = (): string => tempDir('jit-config-');

/** A command line for a shell script: the bundled CLI, as `jit` would be on PATH. */
export async function jitCommand(): Promise<string> {
  return `${JSON.stringify(process.execPath)} ${JSON.stringify(await jitBundle())}`;
}
