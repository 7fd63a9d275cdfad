import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, resolveConfigPath, ALLOW_DEV_ISSUERS_ENV } from '../config/index.js';
import { compileWebhooks } from '../notify/index.js';
import { loadTrustedIssuers } from '../identity/index.js';
import { keyCustody } from '../tokens/index.js';
import { packageVersion } from '../shared/package.js';

/** sysexits.h: a wrong command line, and a configuration that cannot be used. */
export const EX_USAGE = 64;
export const EX_CONFIG = 78;
/** pino's levels, and `silent`. */
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export const BROKER_HELP = `jit-broker ${packageVersion()}: the just-in-time credential broker

Usage: node dist/main.js [--config FILE]      (npm start -- [--config FILE])
       node dist/main.js --check-config FILE
       node dist/main.js --ready-check [--config FILE]
       node dist/main.js --help | --version

Options:
  --config FILE        the configuration file (default: env BROKER_CONFIG, else config/broker.yaml)
  --check-config FILE  validate FILE as the broker would at start, with the files it names
                       (jwksFile, webhook secretFile, keyEncryptionKeyFile) and its policyTests
                       cases, and exit: 0 valid, ${EX_CONFIG} invalid
  --ready-check        ask /readyz of the broker this configuration starts, where it listens
                       (listen.host and listen.port, or HOST and PORT), and exit: 0 ready,
                       1 not (a container's HEALTHCHECK)
  -h, --help           this text
  -v, --version        the version

Environment:
  BROKER_CONFIG  the configuration file        PORT, HOST  override listen.port, listen.host
  BROKER_DB      overrides database            LOG_LEVEL   pino level (default info)
  BROKER_KEY_ENCRYPTION_KEY  seals the private signing keys kept in the database (required on
                 PostgreSQL; or signing.keyEncryptionKeyFile)
  ${ALLOW_DEV_ISSUERS_ENV}=true  allows development issuers where NODE_ENV=production

Signals:
  SIGHUP           reload the configuration file (an invalid one is refused; the running one stays)
  SIGTERM, SIGINT  stop: finish in-flight requests, close the database

Exit codes: 0 stopped cleanly, 1 failed, ${EX_USAGE} bad command line, ${EX_CONFIG} invalid configuration or
anything else to fix before it can start (an address in use, a LOG_LEVEL that is no level, a
database a newer release migrated, key files it may not use).
`;

/** What the command line asks for: to start the broker on a file, or to exit after saying something. */
export type BrokerCommand = { start: { configFile: string } } | Exit;
type Exit = { exit: { code: number; stdout?: string; stderr?: string } };

/**
 * Reads the broker's own command line. Unknown flags and stray arguments are refused (exit 64)
 * rather than ignored: `--chek-config prod.yaml` must not start a broker on the default file.
 */
export async function readCommandLine(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<BrokerCommand> {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        config: { type: 'string' },
        'check-config': { type: 'string' },
        'ready-check': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    return { exit: { code: EX_USAGE, stderr: `jit-broker: ${(error as Error).message}\nTry --help.\n` } };
  }
  if (values.help) return { exit: { code: 0, stdout: BROKER_HELP } };
  if (values.version) return { exit: { code: 0, stdout: `${packageVersion()}\n` } };
  // Checked before any logger is made of it: pino throws on a level it does not know.
  if (env.LOG_LEVEL && !LOG_LEVELS.includes(env.LOG_LEVEL)) {
    return { exit: { code: EX_CONFIG, stderr: `jit-broker: LOG_LEVEL ${JSON.stringify(env.LOG_LEVEL)} is not a log level: one of ${LOG_LEVELS.join(', ')}\n` } };
  }
  if (values['check-config'] !== undefined) return checkConfig(values['check-config'], env);
  if (values['ready-check']) return readyCheck(values.config ?? resolveConfigPath([], env), env);
  return { start: { configFile: values.config ?? resolveConfigPath([], env) } };
}

/**
 * Validates a file as a start would, without opening the database or the keys: the schema and
 * its cross-references, the env overrides and the development-issuer rule, the key-encryption key
 * (env or `signing.keyEncryptionKeyFile`; required on PostgreSQL), the files it names (each
 * `jwksFile`, each webhook `secretFile`), and its own `policyTests`, every case passing. Remote
 * JWKS are not fetched, and no file is written (development issuers' keys are made on first
 * start, so they are not read here).
 */
export async function checkConfig(file: string, env: NodeJS.ProcessEnv): Promise<Exit> {
  // Loaded here: --help and --version need none of the rules the cases are judged by.
  const { loadTestedConfig } = await import('../policy-tests/index.js');
  try {
    const { config, policyTests } = loadTestedConfig(file, env);
    keyCustody(config, env, file);
    await loadTrustedIssuers(config.identity.issuers.filter((issuer) => issuer.dev === undefined));
    compileWebhooks(config.notify);
    const tested = policyTests ? `; policy tests: ${policyTests.passed} passed` : '';
    const summary = `${config.identity.issuers.length} issuers, ${config.scopes.length} scopes, ${config.policies.length} policies${tested}`;
    return { exit: { code: 0, stdout: `${file}: valid (${summary})\n` } };
  } catch (error) {
    if (error instanceof ConfigError) return { exit: { code: EX_CONFIG, stderr: `${error.message}\n` } };
    return { exit: { code: EX_CONFIG, stderr: `${file}: cannot be checked: ${(error as Error).message}\n` } };
  }
}

/** Where a broker listening on `host` is reached from this machine: a wildcard address is reached on loopback. */
const reachable = (host: string): string => (host === '0.0.0.0' || host === '' ? '127.0.0.1' : host === '::' ? '[::1]' : host.includes(':') ? `[${host}]` : host);

/**
 * A container's HEALTHCHECK: asks /readyz of the broker the configuration starts, where it says
 * the broker listens (the file's `listen`, or HOST and PORT as the broker reads them), so a
 * mounted file on another port is probed there. Exits 0 when ready, 1 when not.
 */
export async function readyCheck(file: string, env: NodeJS.ProcessEnv): Promise<Exit> {
  try {
    const { listen } = loadConfig(file, env).config;
    const url = `http://${reachable(listen.host)}:${listen.port}/readyz`;
    const response = await fetch(url, { redirect: 'error', signal: AbortSignal.timeout(READY_CHECK_TIMEOUT_MS) });
    await response.body?.cancel();
    return response.ok ? { exit: { code: 0 } } : { exit: { code: 1, stderr: `jit-broker: not ready: ${url} answered ${response.status}\n` } };
  } catch (error) {
    if (error instanceof ConfigError) return { exit: { code: EX_CONFIG, stderr: `${error.message}\n` } };
    return { exit: { code: 1, stderr: `jit-broker: not ready: ${(error as Error).message}\n` } };
  }
}

/** Under the HEALTHCHECK's own timeout (3 s). */
const READY_CHECK_TIMEOUT_MS = 2_000;
