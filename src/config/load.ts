import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { YAML_OPTIONS, yamlProblems } from '../shared/yaml.js';
import { ConfigError } from './errors.js';
import { configSchema, type BrokerConfig } from './schema.js';

export { ConfigError };

export const DEFAULT_CONFIG_PATH = 'config/broker.yaml';


export interface LoadedConfig {
  config: BrokerConfig;
  file: string;
  /** SHA-256 of the file as read: what the `config.loaded` audit event records. */
  sha256: string;
  /** The file's text as read: what a worker of several starts with (process/worker-config.ts). May hold a password: never logged. */
  text: string;
}

/** `--config FILE`, else env `BROKER_CONFIG`, else `config/broker.yaml` (CONTRACT section 2). */
export function resolveConfigPath(argv: readonly string[], env: NodeJS.ProcessEnv): string {
  const flag = argv.findIndex((arg) => arg === '--config' || arg.startsWith('--config='));
  if (flag >= 0) {
    const arg = argv[flag] as string;
    const value = arg.includes('=') ? arg.slice(arg.indexOf('=') + 1) : argv[flag + 1];
    if (!value) throw new ConfigError('--config', ['--config needs a file path']);
    return value;
  }
  return env.BROKER_CONFIG || DEFAULT_CONFIG_PATH;
}

/** The env flag that lets development issuers run where NODE_ENV is production. */
export const ALLOW_DEV_ISSUERS_ENV = 'BROKER_ALLOW_DEV_ISSUERS';

/**
 * Reads, parses and validates the file, then applies the env overrides PORT, HOST and BROKER_DB.
 * Where NODE_ENV is `production` (the container image sets it), development issuers are refused
 * unless BROKER_ALLOW_DEV_ISSUERS is `true`: their private key sits beside the broker, and whoever
 * reads it can be anyone, so running one must be a decision, never a default. `text`, when
 * given, is the file's text as read before (the one the running broker accepted): the file is
 * then not read, and `file` only names it.
 */
export function loadConfig(file: string, env: NodeJS.ProcessEnv = {}, text = readConfigFile(file)): LoadedConfig {
  const doc = parseDocument(text, YAML_OPTIONS);
  const problems = yamlProblems(doc);
  if (problems.length > 0) throw new ConfigError(file, problems.map((problem) => `not valid YAML: ${problem.message}`));
  let raw: unknown;
  try {
    raw = doc.toJS();
  } catch (error) {
    // yaml refuses, as it converts, aliases that would expand without bound ("billion laughs").
    throw new ConfigError(file, [`not valid YAML: ${(error as Error).message.split('\n')[0]}`]);
  }
  const config = namingEnvOverrides(env, () => parseConfig(file, applyEnvOverrides(raw, env)));
  const refused = devIssuersRefused(config, env);
  if (refused.length > 0) throw new ConfigError(file, refused);
  return { config, file, sha256: createHash('sha256').update(text).digest('hex'), text };
}

function readConfigFile(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(file, [`cannot read the file (${(error as NodeJS.ErrnoException).code ?? 'error'})`]);
  }
}

export function parseConfig(file: string, raw: unknown): BrokerConfig {
  const result = configSchema.safeParse(raw);
  const issues = result.success ? [] : formatIssues(result.error.issues);
  // Strict objects name such a key themselves (unknown field); records drop it silently.
  const unnamed = protoKeys(raw).filter((line) => !issues.some((issue) => issue.startsWith(line.slice(0, line.indexOf(': ') + 2))));
  const problems = [...unnamed, ...issues];
  if (problems.length > 0 || !result.success) throw new ConfigError(file, problems);
  return Object.freeze(result.data) as BrokerConfig;
}

/**
 * A `__proto__` key (YAML and JSON.parse make it an own key) is dropped without a word by the
 * schema, which cannot store it as a member: a claim condition named so would silently vanish
 * and widen its rule. Refused wherever it appears.
 */
function protoKeys(raw: unknown): string[] {
  const found: string[] = [];
  const pending: [unknown, string][] = [[raw, '']];
  while (pending.length > 0) {
    const [value, path] = pending.pop() as [unknown, string];
    if (typeof value !== 'object' || value === null) continue;
    if (!Array.isArray(value) && Object.hasOwn(value, '__proto__')) found.push(`${path ? `${path}.` : ''}__proto__: never a valid key`);
    for (const [key, member] of Object.entries(value)) pending.push([member, path ? `${path}.${key}` : key]);
  }
  return found;
}

function devIssuersRefused(config: BrokerConfig, env: NodeJS.ProcessEnv): string[] {
  if (env.NODE_ENV !== 'production' || env[ALLOW_DEV_ISSUERS_ENV] === 'true') return [];
  return config.identity.issuers.flatMap((issuer, i) =>
    issuer.dev === undefined
      ? []
      : [
          `identity.issuers.${i}.dev: "${issuer.name}" is a development issuer, refused where NODE_ENV=production (anyone who can read its key directory can be anyone); configure your real issuers, or set ${ALLOW_DEV_ISSUERS_ENV}=true to run it knowingly`,
        ],
  );
}

function applyEnvOverrides(raw: unknown, env: NodeJS.ProcessEnv): unknown {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return raw;
  const config = { ...(raw as Record<string, unknown>) };
  const listen = { ...((config.listen as Record<string, unknown> | undefined) ?? {}) };
  if (env.PORT !== undefined && env.PORT !== '') listen.port = /^\d+$/.test(env.PORT) ? Number(env.PORT) : env.PORT;
  if (env.HOST) listen.host = env.HOST;
  config.listen = listen;
  if (env.BROKER_DB) config.database = env.BROKER_DB;
  return config;
}

/** The fields the environment overrides, by the variable that does. */
const ENV_OVERRIDES = [
  ['listen.port', 'PORT'],
  ['listen.host', 'HOST'],
  ['database', 'BROKER_DB'],
] as const;

/** A refusal of a value the environment gave names the variable: the file may be fine. */
function namingEnvOverrides<T>(env: NodeJS.ProcessEnv, parse: () => T): T {
  try {
    return parse();
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    const given = ENV_OVERRIDES.filter(([, name]) => env[name]);
    throw new ConfigError(
      error.file,
      error.problems.map((problem) => {
        const override = given.find(([path]) => problem.startsWith(`${path}: `));
        return override ? `${override[0]} (from env ${override[1]})${problem.slice(override[0].length)}` : problem;
      }),
    );
  }
}

function formatIssues(issues: readonly z.core.$ZodIssue[]): string[] {
  return issues.flatMap((issue) => {
    const path = issue.path.map(String).join('.');
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((key) => `${path ? `${path}.` : ''}${key}: unknown field`);
    }
    return [`${path || '(root)'}: ${issue.message}`];
  });
}
