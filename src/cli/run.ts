import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline/promises';
import { ConfigError } from '../config/index.js';
import * as auditCommand from './commands/audit.js';
import * as backupCommand from './commands/backup.js';
import * as decide from './commands/decide.js';
import * as decodeCommand from './commands/decode.js';
import * as devTokenCommand from './commands/dev-token.js';
import * as lifecycle from './commands/lifecycle.js';
import * as requestCommand from './commands/request.js';
import { CliError, shown, type CliIo } from './io.js';

type Command = (args: string[], io: CliIo) => Promise<number>;

const COMMANDS: Record<string, Command> = {
  'dev-token': devTokenCommand.devToken,
  request: requestCommand.request,
  collect: requestCommand.collect,
  approvals: decide.approvals,
  show: decide.show,
  approve: decide.approve,
  deny: decide.deny,
  complete: lifecycle.complete,
  revoke: lifecycle.revoke,
  review: lifecycle.review,
  decode: decodeCommand.decode,
  audit: auditCommand.audit,
  backup: backupCommand.backup,
  restore: backupCommand.restore,
};

const HELP = `jit: the just-in-time credential broker's command line

${devTokenCommand.help}

${requestCommand.help}

${decide.help}

${lifecycle.help}

${auditCommand.help}

${backupCommand.help}

${decodeCommand.help}

Every command that calls the broker takes:
  --broker URL            the broker (default: env BROKER_URL, else the config's issuer)
  --identity-file FILE    your identity token (- for stdin; default: env BROKER_IDENTITY_TOKEN)
  --config FILE           the broker configuration (default: env BROKER_CONFIG, else config/broker.yaml)
  --json                  print the broker's JSON answer on stdout
Exit codes: 0 done, 1 refused or failed, 2 usage, 75 still pending.
`;

/** Runs one command; returns the exit code. Output only through `io`. */
export async function run(argv: string[], io: CliIo): Promise<number> {
  const [name, ...args] = argv;
  if (!name || name === 'help' || name === '--help' || name === '-h') {
    io.stdout(HELP);
    return name ? 0 : 2;
  }
  const command = COMMANDS[name];
  if (!command) {
    io.stderr(`jit: unknown command "${name}"; try jit help\n`);
    return 2;
  }
  try {
    return await command(args, io);
  } catch (error) {
    if (error instanceof CliError) {
      io.stderr(`jit ${name}: ${shown(error.message)}\n`);
      return error.exitCode;
    }
    if (error instanceof ConfigError) {
      io.stderr(`jit ${name}: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
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
