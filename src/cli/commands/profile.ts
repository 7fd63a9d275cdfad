import { checkBrokerUrl, readProfile, resolveBroker, writeProfile } from '../broker.js';
import type { CliIo } from '../cli-io.js';
import { profileFile } from '../config-dir.js';
import { EXIT, parse, shown, usage } from '../io.js';
import { printJson } from '../views.js';

export const help = `jit profile [show]              the broker this CLI talks to, and what says so
jit profile set --broker URL    keep URL in the CLI profile (<config dir>/profile.json)
jit profile unset               forget it
  The config dir is env JIT_CONFIG_DIR, else $XDG_CONFIG_HOME/jit, else ~/.config/jit.
  --broker and env BROKER_URL still win over the profile.`;

export async function profile(args: string[], io: CliIo): Promise<number> {
  const [what = 'show', ...rest] = args;
  if (what === 'show') return show(rest, io);
  if (what === 'set') return set(rest, io);
  if (what === 'unset') return unset(rest, io);
  throw usage('profile takes show, set or unset');
}

async function show(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, { broker: { type: 'string' }, json: { type: 'boolean', default: false } });
  const broker = resolveBroker(io.env, values);
  if (values.json) printJson(io, { broker: broker.url, source: broker.source, profile: profileFile(io.env) });
  else io.stdout(`broker  ${shown(broker.url)}  (from ${shown(broker.source)})\n`);
  return EXIT.ok;
}

async function set(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, { broker: { type: 'string' } });
  if (values.broker === undefined) throw usage('profile set takes --broker URL');
  const url = checkBrokerUrl(values.broker, '--broker', io.env);
  const path = writeProfile(io.env, { ...readProfile(io.env), broker: url });
  io.stderr(`the broker is ${shown(url)} (kept in ${shown(path)})\n`);
  if (io.env.BROKER_URL) io.stderr(`note: BROKER_URL is set (${shown(io.env.BROKER_URL)}) and wins over the profile\n`);
  return EXIT.ok;
}

async function unset(args: string[], io: CliIo): Promise<number> {
  parse(args, {});
  const { broker: _, ...rest } = readProfile(io.env) ?? {};
  writeProfile(io.env, rest);
  io.stderr('the profile names no broker now\n');
  return EXIT.ok;
}
