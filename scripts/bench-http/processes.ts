/**
 * The servers under load, each its own `node` process: started, watched, measured through
 * /proc, and stopped however the bench ends.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { BenchError, say } from './console.js';

export interface Child {
  label: string;
  process: ChildProcess;
  pid: number;
  /** The last lines it wrote (stdout and stderr), shown when it fails. */
  tail: string[];
  /** How many lines it wrote: the broker runs at `warn`, so any is worth a look. */
  lines: number;
  /** Its first line on stdout (the peer says there where it listens). */
  firstLine: Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Every child still running, so any way out of the bench stops them all. */
const running = new Set<Child>();
/** Set once the bench is interrupted: no child may start after its siblings were told to stop. */
let stopping = false;
const TAIL_LINES = 30;

const ROOT = resolve(import.meta.dirname, '../..');

/**
 * `node`'s arguments for the built broker exactly as `npm start` runs it (its V8 flags included),
 * so the benches measure what is deployed.
 */
export function brokerArgs(...args: string[]): string[] {
  return brokerArgsIn(ROOT, ...args);
}

/** The same for the broker built in another checkout (`root`, with its own package.json and dist/). */
export function brokerArgsIn(root: string, ...args: string[]): string[] {
  const { scripts } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: { start: string } };
  const [node, ...words] = scripts.start.split(/\s+/);
  if (node !== 'node') throw new BenchError(`npm start runs "${scripts.start}", not node: the bench cannot follow it`);
  return [...words.map((word) => (word.startsWith('-') ? word : join(root, word))), ...args];
}
const STOP_GRACE_MS = 15_000;

/**
 * `node ARGS` as a child whose pid is the server itself (no wrapper such as tsx), so /proc reads
 * the server. With `ipc`, the child can notice the bench dying even by SIGKILL (its channel closes).
 */
export function startChild(label: string, args: string[], env: NodeJS.ProcessEnv, { ipc = false } = {}): Child {
  if (stopping) throw new BenchError(`not starting ${label}: the bench is stopping`);
  const proc = spawn(process.execPath, args, { env, stdio: ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'] });
  const { pid, stdout, stderr } = proc;
  if (pid === undefined || !stdout || !stderr) throw new Error(`${label} could not be started`);
  let onFirstLine: (line: string) => void = () => {};
  const child: Child = {
    label,
    process: proc,
    pid,
    tail: [],
    lines: 0,
    firstLine: new Promise((resolveLine) => (onFirstLine = resolveLine)),
    exited: new Promise((resolveExit) => proc.once('exit', (code, signal) => resolveExit({ code, signal }))),
  };
  createInterface({ input: stdout }).once('line', (line) => onFirstLine(line));
  // Both pipes must be drained, or a chatty child blocks on a full pipe and the bench measures that.
  for (const stream of [stdout, stderr]) {
    createInterface({ input: stream }).on('line', (line) => {
      child.lines += 1;
      child.tail.push(line);
      if (child.tail.length > TAIL_LINES) child.tail.shift();
    });
  }
  running.add(child);
  void child.exited.then(() => running.delete(child));
  return child;
}

/** SIGTERM and wait for a clean exit (which is also when --cpu-prof writes its profile); SIGKILL if it hangs. */
export async function stopChild(child: Child): Promise<void> {
  if (child.process.exitCode !== null || child.process.signalCode !== null) return;
  child.process.kill('SIGTERM');
  const killer = setTimeout(() => {
    say(`${child.label} did not stop within ${STOP_GRACE_MS / 1000} s of SIGTERM; killing it`);
    child.process.kill('SIGKILL');
  }, STOP_GRACE_MS);
  const { code, signal } = await child.exited;
  clearTimeout(killer);
  if (code !== 0) say(`${child.label} exited with ${signal ?? `code ${code}`}\n${child.tail.join('\n')}`);
}

/** Stops every child still running; with `forGood`, refuses to start any more (the bench was interrupted). */
export async function stopAll({ forGood = false } = {}): Promise<void> {
  if (forGood) stopping = true;
  await Promise.all([...running].map(stopChild));
}

/** Rejects as soon as the child exits: a server that dies while we wait for it must not hang the bench. */
export function failOnExit(child: Child): Promise<never> {
  return child.exited.then(({ code, signal }) => {
    throw new BenchError(`${child.label} exited (${signal ?? `code ${code}`}) before it was ready:\n${child.tail.join('\n')}`);
  });
}

/** A free loopback port: the broker takes its port from its config file, so it is chosen before the broker starts. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolvePort(address.port) : reject(new Error('no port'))));
    });
  });
}

export async function waitUntilReady(url: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new BenchError(`${url} was not ready within ${timeoutMs / 1000} s`);
}

const ticksPerSecond = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** The process and every process under it (a broker with `listen.workers` is a primary and its workers); one that exits meanwhile is left out. */
function processTree(pid: number): number[] {
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  const children = tasks.flatMap((task) => {
    try {
      return readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    } catch {
      return [];
    }
  });
  return [pid, ...children.flatMap(processTree)];
}

/** utime and stime (fields 14 and 15 of /proc/<pid>/stat), and with `reaped` cutime and cstime: children that exited. */
function statSeconds(pid: number, reaped: boolean): number {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return 0; // exited since it was listed
  }
  // Field 2 (comm) is in parentheses and may hold spaces: count the fields after its closing one.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
  const own = (fields[11] ?? 0) + (fields[12] ?? 0);
  return (own + (reaped ? (fields[13] ?? 0) + (fields[14] ?? 0) : 0)) / ticksPerSecond;
}

/**
 * CPU seconds (user + system) the process and its children have used so far, from /proc. With
 * `reaped`, also the children it has waited for: PostgreSQL's backends come and go with their
 * connections, and their time moves to the postmaster's account when they exit.
 */
export function cpuSeconds(pid: number, { reaped = false } = {}): number {
  return processTree(pid).reduce((sum, p) => sum + statSeconds(p, reaped && p === pid), 0);
}

/** Peak resident set (VmHWM) of the process and of each process under it, over their lives so far, in bytes. */
export function peakRssBytesByProcess(pid: number): number[] {
  return processTree(pid).map((p) => {
    const match = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
    return match ? Number(match[1]) * 1024 : Number.NaN;
  });
}
