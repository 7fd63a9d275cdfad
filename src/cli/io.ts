import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { loadConfig, resolveConfigPath, type BrokerConfig } from '../config/index.js';

/** Everything a command touches outside itself, so tests run the CLI in-process. */
export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Whether stderr is a terminal (progress lines redraw in place). */
  interactive: boolean;
  env: NodeJS.ProcessEnv;
  readStdin: () => string;
  /** Asks a yes/no question on the terminal. */
  confirm: (question: string) => Promise<boolean>;
  fetch: typeof fetch;
  sleep: (ms: number) => Promise<void>;
}

/** A failure the user can act on: printed as one line, never a stack trace. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

/**
 * Text from the broker or a token, made safe for a terminal: control characters, bidirectional
 * overrides and other invisible format characters are shown as escapes, so a value cannot move
 * the cursor, recolour or rewrite what the reader sees.
 */
export const shown = (text: string): string =>
  text.replace(/[\p{Cc}\p{Cf}]/gu, (c) => (c === '\n' ? '\\n' : c === '\t' ? '\\t' : `\\u{${c.codePointAt(0)?.toString(16)}}`));

export const usage = (message: string) => new CliError(message, 2);

export type Options = ParseArgsConfig['options'];

/** Shared by every command that talks to a broker. */
export const connectionOptions = {
  broker: { type: 'string' },
  'identity-file': { type: 'string' },
  config: { type: 'string' },
  json: { type: 'boolean', default: false },
} as const satisfies Options;

type Parsed<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: O; allowPositionals: true; strict: true }>>;

export function parse<O extends Options>(args: string[], options: O): Parsed<O> {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw usage((error as Error).message);
  }
}

/** The broker configuration, when a command needs it (dev-token, the default broker URL). */
export function readConfig(io: CliIo, file: string | undefined): BrokerConfig {
  return loadConfig(file ?? resolveConfigPath([], io.env), {}).config;
}

/** `--broker`, else env BROKER_URL, else the configuration's `issuer`, else the development default. */
export function brokerUrl(io: CliIo, values: { broker?: string | undefined; config?: string | undefined }): string {
  if (values.broker) return values.broker;
  if (io.env.BROKER_URL) return io.env.BROKER_URL;
  try {
    return readConfig(io, values.config).issuer;
  } catch {
    return 'http://127.0.0.1:8080';
  }
}

/** The caller's identity token: `--identity-file FILE` (`-` for stdin), else env BROKER_IDENTITY_TOKEN. */
export function identityToken(io: CliIo, file: string | undefined): string {
  let token: string | undefined;
  if (file === '-') token = io.readStdin();
  else if (file !== undefined) {
    try {
      token = readFileSync(file, 'utf8');
    } catch (error) {
      throw new CliError(`cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  } else token = io.env.BROKER_IDENTITY_TOKEN;
  token = token?.trim();
  if (!token) throw usage('no identity token: pass --identity-file FILE (or -) or set BROKER_IDENTITY_TOKEN');
  return token;
}
