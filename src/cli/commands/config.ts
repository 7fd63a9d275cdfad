import { resolveConfigPath } from '../../config/index.js';
import { checkConfig } from '../../process/args.js';
import type { CliIo } from '../cli-io.js';
import { parse, usage } from '../io.js';

export const help = `jit config check [FILE]
  Checks a configuration file as the broker does at start, without starting it: the same as
  node dist/main.js --check-config FILE. The schema and its cross-references, the files it names
  (jwksFile, webhook secretFile, keyEncryptionKeyFile) and its policyTests cases. FILE defaults
  to env BROKER_CONFIG, else config/broker.yaml. Exit 0 valid, 78 invalid (one line per problem).`;

export async function config(args: string[], io: CliIo): Promise<number> {
  const [what, ...rest] = args;
  if (what !== 'check') throw usage('config needs check');
  const { positionals } = parse(rest, {}, ['FILE']);
  const file = positionals[0] ?? resolveConfigPath([], io.env);
  const { exit } = await checkConfig(file, io.env);
  if (exit.stdout) io.stdout(exit.stdout);
  if (exit.stderr) io.stderr(exit.stderr);
  return exit.code;
}
