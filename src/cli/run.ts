import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline/promises';
import { ConfigError } from '../config/errors.js';
import { BROKER_HELP } from './client.js';
import { EXIT_CODES_HELP } from './errors.js';
import { IDENTITY_HELP } from './identity.js';
import { argumentInMessage, CliError, EXIT, shown, unexpectedArgument, type CliIo } from './io.js';
import { packageVersion } from '../shared/package.js';

type Command = (args: string[], io: CliIo) => Promise<number>;

/** A command as it runs, with its `--help`. */
interface Loaded {
  run: Command;
  help: string;
}

/**
 * A command whose module is imported only when it runs (or shows its help): a pipeline step's
 * `jit request` then loads no configuration schema, policy engine or database driver, which cost
 * each call a quarter of a second when every command was imported up front.
 */
const lazy =
  <M>(load: () => Promise<M>, run: (module: M) => Command, help: (module: M) => string) =>
  async (): Promise<Loaded> => {
    const module = await load();
    return { run: run(module), help: help(module) };
  };

const COMMANDS: Record<string, () => Promise<Loaded>> = {
  'dev-token': lazy(() => import('./commands/dev-token.js'), (m) => m.devToken, (m) => m.help),
  request: lazy(() => import('./commands/request.js'), (m) => m.request, (m) => m.requestHelp),
  collect: lazy(() => import('./commands/request.js'), (m) => m.collect, (m) => m.collectHelp),
  requests: lazy(() => import('./commands/listings.js'), (m) => m.requests, (m) => m.requestsHelp),
  approvals: lazy(() => import('./commands/decide.js'), (m) => m.approvals, (m) => m.approvalsHelp),
  show: lazy(() => import('./commands/decide.js'), (m) => m.show, (m) => m.showHelp),
  approve: lazy(() => import('./commands/decide.js'), (m) => m.approve, (m) => m.decideHelp('approve')),
  deny: lazy(() => import('./commands/decide.js'), (m) => m.deny, (m) => m.decideHelp('deny')),
  complete: lazy(() => import('./commands/lifecycle.js'), (m) => m.complete, (m) => m.completeHelp),
  revoke: lazy(() => import('./commands/lifecycle.js'), (m) => m.revoke, (m) => m.revokeHelp),
  review: lazy(() => import('./commands/lifecycle.js'), (m) => m.review, (m) => m.reviewHelp),
  reviews: lazy(() => import('./commands/listings.js'), (m) => m.reviews, (m) => m.reviewsHelp),
  decode: lazy(() => import('./commands/decode.js'), (m) => m.decode, (m) => m.help),
  audit: lazy(() => import('./commands/audit.js'), (m) => m.audit, (m) => m.help),
  login: lazy(() => import('./commands/login.js'), (m) => m.login, (m) => m.help),
  logout: lazy(() => import('./commands/login.js'), (m) => m.logout, (m) => m.logoutHelp),
  profile: lazy(() => import('./commands/profile.js'), (m) => m.profile, (m) => m.help),
  backup: lazy(() => import('./commands/backup.js'), (m) => m.backup, (m) => m.backupHelp),
  restore: lazy(() => import('./commands/backup.js'), (m) => m.restore, (m) => m.restoreHelp),
  policy: lazy(() => import('./commands/policy.js'), (m) => m.policy, (m) => m.help),
  config: lazy(() => import('./commands/config.js'), (m) => m.config, (m) => m.help),
};

const CALLER_OPTIONS_HELP = `${BROKER_HELP}

${IDENTITY_HELP}

  --json   the broker's objects as JSON on stdout (a listing: a JSON array of them)`;

const LOCAL_COMMANDS = new Set(['dev-token', 'decode', 'profile', 'login', 'logout', 'backup', 'restore', 'policy', 'config']);

const HELP = `jit: the just-in-time credential broker's command line

Getting a credential:
  request     exchange your identity for a credential (the token alone on stdout)
  collect     wait for an approved request and print its token
  requests    your own requests
  complete    the task is done: end the grant (by request id or by the token)
  revoke      revoke a grant (by request id or by the token)
Deciding and reviewing:
  approvals   requests you may decide
  show        one request, as JSON
  approve     approve a request (asks first; --yes in scripts)
  deny        deny a request
  reviews     break-glass grants awaiting post-review
  review      post-review a break-glass grant
Auditing:
  audit       issuances, events, duties, entitlements (grants against their use), verify
Policy as code:
  policy      test a configuration against its cases; explain what it grants and why
Setting up:
  login       sign in with your SSO (the broker's person issuer); later commands use it
  logout      forget that sign-in
  profile     the broker this CLI talks to
Operating:
  backup      a consistent copy of a SQLite database, while a broker runs
  restore     put a verified backup in place
  config      check a configuration file as the broker does at start
  dev-token   a development identity token (development configuration only)
  decode      a JWT's header and claims, unverified

jit COMMAND --help (or jit help COMMAND) shows a command's options; jit --version its version.
Durations are 30s, 5m, 1h, 7d (a bare number is seconds).

${CALLER_OPTIONS_HELP}

${EXIT_CODES_HELP}
`;

/** Own members only: `constructor` or `__proto__` is no command. */
const commandNamed = (name: string) => (Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined);

/** A command's `--help`: its usage, and for those that call the broker, how they find it and you. */
function commandHelp(name: string, { help }: Loaded): string {
  return LOCAL_COMMANDS.has(name) ? `${help}\n` : `${help}\n\n${CALLER_OPTIONS_HELP}\n\n${EXIT_CODES_HELP}\n`;
}

/** `--help` or `-h` among a command's arguments (before a `--`), as every tool answers it. */
function asksForHelp(args: string[]): boolean {
  const end = args.indexOf('--');
  return (end < 0 ? args : args.slice(0, end)).some((arg) => arg === '--help' || arg === '-h');
}

/** Runs one command; returns the exit code. Output only through `io`. */
export async function run(argv: string[], io: CliIo): Promise<number> {
  const [name, ...args] = argv;
  if (name === undefined) {
    io.stderr(HELP);
    return EXIT.usage;
  }
  if (name === '--version' || name === '-V' || name === 'version') {
    io.stdout(`jit ${packageVersion()}\n`);
    return EXIT.ok;
  }
  if (name === 'help' || name === '--help' || name === '-h') {
    const [topic, extra] = args;
    if (extra !== undefined) {
      io.stderr(`jit help: ${shown(unexpectedArgument(extra, ['COMMAND']))}\n`);
      return EXIT.usage;
    }
    if (topic === undefined) {
      io.stdout(HELP);
      return EXIT.ok;
    }
    const load = commandNamed(topic);
    if (load === undefined) return unknown(io, topic);
    io.stdout(commandHelp(topic, await load()));
    return EXIT.ok;
  }
  const load = commandNamed(name);
  if (load === undefined) return unknown(io, name);
  const command = await load();
  if (asksForHelp(args)) {
    io.stdout(commandHelp(name, command));
    return EXIT.ok;
  }
  try {
    return await command.run(args, io);
  } catch (error) {
    if (error instanceof CliError) {
      io.stderr(`jit ${name}: ${shown(error.message)}${error.exitCode === EXIT.usage ? ` (see jit ${name} --help)` : ''}\n`);
      return error.exitCode;
    }
    if (error instanceof ConfigError) {
      io.stderr(`jit ${name}: ${error.message}\n`);
      return EXIT.failed;
    }
    throw error;
  }
}

function unknown(io: CliIo, name: string): number {
  io.stderr(`jit: unknown command "${shown(argumentInMessage(name))}"; jit --help lists them\n`);
  return EXIT.usage;
}

/** `run` as the `jit` process runs it: an error no command expected is one line and exit 1. */
export function runCli(argv: string[], io: CliIo): Promise<number> {
  return run(argv, io).catch((error: unknown) => {
    io.stderr(`jit: ${(error as Error).message}\n`);
    return EXIT.failed;
  });
}

export const processIo = (): CliIo => ({
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  interactive: Boolean(process.stderr.isTTY && process.stdin.isTTY),
  stdoutTerminal: Boolean(process.stdout.isTTY),
  env: process.env,
  readStdin: () => readFileSync(0, 'utf8'),
  async confirm(question) {
    const prompt = createInterface({ input: process.stdin, output: process.stderr });
    try {
      return /^y(es)?$/i.test((await prompt.question(question)).trim());
    } finally {
      prompt.close();
    }
  },
  fetch: (input, init) => fetch(input, init),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  now: () => Date.now(),
});
