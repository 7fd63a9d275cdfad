import { decodeJwt, decodeProtectedHeader } from 'jose';
import { CliError, usage, type CliIo } from '../io.js';

export const help = `jit decode TOKEN|-    prints a JWT's header and claims (NOT verified: for reading only)`;

export async function decode(args: string[], io: CliIo): Promise<number> {
  const input = args[0] === '-' || args[0] === undefined ? io.readStdin() : args[0];
  const token = input.trim();
  if (!token) throw usage('decode needs a token (or - to read it from stdin)');
  try {
    io.stdout(`${JSON.stringify({ header: decodeProtectedHeader(token), claims: decodeJwt(token) }, null, 2)}\n`);
  } catch {
    throw new CliError('not a JWT');
  }
  return 0;
}
