import { decodeJwt, decodeProtectedHeader } from 'jose';
import type { CliIo } from '../cli-io.js';
import { CliError, EXIT, parse, usage } from '../io.js';
import { printJson } from '../views.js';

export const help = `jit decode TOKEN|-
  Prints a JWT's header and claims as JSON (NOT verified: for reading only); - reads it from stdin.`;

export async function decode(args: string[], io: CliIo): Promise<number> {
  const { positionals } = parse(args, { json: { type: 'boolean', default: false } }, ['TOKEN|-']);
  const input = positionals[0] === '-' || positionals[0] === undefined ? io.readStdin() : positionals[0];
  const token = input.trim();
  if (!token) throw usage('decode needs a token (or - to read it from stdin)');
  let decoded: { header: unknown; claims: unknown };
  try {
    decoded = { header: decodeProtectedHeader(token), claims: decodeJwt(token) };
  } catch {
    throw new CliError('not a JWT');
  }
  printJson(io, decoded);
  return EXIT.ok;
}
