import type { CliIo } from '../../src/cli/io.js';
import { run } from '../../src/cli/run.js';

/** Runs the CLI in-process with captured output; real network through `fetch`. */
export async function runCli(argv: string[], env: NodeJS.ProcessEnv = {}, options: { stdin?: string; interactive?: boolean; answer?: boolean } = {}) {
  const out = { stdout: '', stderr: '' };
  const io: CliIo = {
    stdout: (text) => void (out.stdout += text),
    stderr: (text) => void (out.stderr += text),
    interactive: options.interactive ?? false,
    stdoutTerminal: false,
    env,
    readStdin: () => options.stdin ?? '',
    confirm: async () => options.answer ?? false,
    fetch: (input, init) => fetch(input, init),
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, Math.min(ms, 20))),
    now: () => Date.now(),
  };
  const code = await run(argv, io);
  return { code, ...out };
}
