import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline/promises';
import { ConfigError } from '../config/index.js';
import { BROKER_HELP } from './client.js';
import * as auditCommand from './commands/audit.js';
import * as backupCommand from './commands/backup.js';
import * as configCommand from './commands/config.js';
import * as decide from './commands/decide.js';
import * as decodeCommand from './commands/decode.js';
import * as devTokenCommand from './commands/dev-token.js';
import * as lifecycle from './commands/lifecycle.js';
import * as listings from './commands/listings.js';
import * as loginCommand from './commands/login.js';
import * as policyCommand from './commands/policy.js';
import * as profileCommand from './commands/profile.js';
import * as requestCommand from './commands/request.js';
import { EXIT_CODES_HELP } from './errors.js';
import { IDENTITY_HELP } from './identity.js';
import { CliError, EXIT, shown, type CliIo } from './io.js';
import { packageVersion } from '../shared/package.js';

type Command = (args: string[], io: CliIo) => Promise<number>;

const COMMANDS: Record<string, Command> = {
  'dev-token': devTokenCommand.devToken,
  request: requestCommand.request,
  collect: requestCommand.collect,
  requests: listings.requests,
  approvals: decide.approvals,
  show: decide.show,
  approve: decide.approve,
  deny: decide.deny,
  complete: lifecycle.complete,
  revoke: lifecycle.revoke,
  review: lifecycle.review,
  reviews: listings.reviews,
  decode: decodeCommand.decode,
  audit: auditCommand.audit,
  login: loginCommand.login,
  logout: loginCommand.logout,
  profile: profileCommand.profile,
  backup: backupCommand.backup,
  restore: backupCommand.restore,
  policy: policyCommand.policy,
  config: configCommand.config,
};

const CALLER_OPTIONS_HELP = `${BROKER_HELP}

${IDENTITY_HELP}

  --json   the broker's objects as JSON on stdout (a listing: a JSON array of them)`;

/** Each command's `--help`: its usage, and for those that call the broker, how they find it and you. */
const COMMAND_HELP: Record<string, string> = {
  'dev-token': devTokenCommand.help,
  request: requestCommand.requestHelp,
  collect: requestCommand.collectHelp,
  requests: listings.requestsHelp,
  approvals: decide.approvalsHelp,
  show: decide.showHelp,
  approve: decide.decideHelp('approve'),
  deny: decide.decideHelp('deny'),
  complete: lifecycle.completeHelp,
  revoke: lifecycle.revokeHelp,
  review: lifecycle.reviewHelp,
  reviews: listings.reviewsHelp,
  decode: decodeCommand.help,
  audit: auditCommand.help,
  profile: profileCommand.help,
  login: loginCommand.help,
  logout: loginCommand.logoutHelp,
  backup: backupCommand.backupHelp,
  restore: backupCommand.restoreHelp,
  policy: policyCommand.help,
  config: configCommand.help,
};
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

function commandHelp(name: string): string | undefined {
  const text = COMMAND_HELP[name];
  if (text === undefined) return undefined;
  return LOCAL_COMMANDS.has(name) ? `${text}\n` : `${text}\n\n${CALLER_OPTIONS_HELP}\n\n${EXIT_CODES_HELP}\n`;
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
    const topic = args[0];
    if (topic === undefined) {
      io.stdout(HELP);
      return EXIT.ok;
    }
    const text = commandHelp(topic);
    if (text === undefined) return unknown(io, topic);
    io.stdout(text);
    return EXIT.ok;
  }
  const command = COMMANDS[name];
  if (!command) return unknown(io, name);
  const help = commandHelp(name);
  if (help !== undefined && asksForHelp(args)) {
    io.stdout(help);
    return EXIT.ok;
  }
  try {
    return await command(args, io);
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
  io.stderr(`jit: unknown command "${shown(name)}"; jit --help lists them\n`);
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
});
