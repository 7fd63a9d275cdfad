import { isLoopbackHost } from '../shared/loopback.js';
import { profileFile, readConfigFile, writeConfigFile } from './config-dir.js';
import { argumentInMessage, CliError, usage } from './errors.js';

/** Where a command finds the broker, and what said so (for messages). */
export interface BrokerLocation {
  url: string;
  source: string;
}

export const DEV_BROKER_URL = 'http://127.0.0.1:8080';

/**
 * The broker: `--broker`, else env BROKER_URL, else the CLI profile, else the broker the person
 * logged in to (when the identity is that login). Never the server's configuration file: the
 * CLI usually runs where that file is not, and guessing sends an identity token somewhere else.
 */
export function resolveBroker(
  env: NodeJS.ProcessEnv,
  values: { broker?: string | undefined },
  fallback?: BrokerLocation,
): BrokerLocation {
  const found =
    (values.broker !== undefined && { url: values.broker, source: '--broker' }) ||
    (env.BROKER_URL && { url: env.BROKER_URL, source: 'BROKER_URL' }) ||
    profileBroker(env) ||
    fallback;
  if (!found) {
    throw usage(
      `no broker: pass --broker URL, set BROKER_URL, or run: jit profile set --broker URL (the development broker of npm start is ${DEV_BROKER_URL})`,
    );
  }
  return { url: checkBrokerUrl(found.url, found.source, env), source: found.source };
}

/**
 * Identity tokens go to this URL: https, or plain http to this machine. A broker reached over
 * plain http through a protected path (a service mesh's sidecar) needs JIT_ALLOW_HTTP=1.
 */
export function checkBrokerUrl(text: string, source: string, env: NodeJS.ProcessEnv): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw usage(`the broker URL from ${source} is not a URL: ${argumentInMessage(text)}`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw usage(`the broker URL from ${source} must be https (or http to this machine)`);
  if (url.username || url.password) throw usage(`the broker URL from ${source} must not carry a user or password`);
  if (url.search || url.hash) throw usage(`the broker URL from ${source} must not carry a query or fragment`);
  if (url.protocol === 'http:' && !isLoopbackHost(url.hostname) && env.JIT_ALLOW_HTTP !== '1') {
    throw usage(
      `the broker URL from ${source} is plain http to another machine: identity tokens would cross the network in clear text. Use https, or set JIT_ALLOW_HTTP=1 where the path is protected otherwise`,
    );
  }
  return url.href.replace(/\/+$/, '');
}

/** A host name that is this machine: plain http to it crosses no network. */

export interface Profile {
  broker?: string;
}

export function readProfile(env: NodeJS.ProcessEnv): Profile | undefined {
  const path = profileFile(env);
  let text: string | undefined;
  try {
    text = readConfigFile(path, { secret: false });
  } catch (error) {
    if (error instanceof CliError) throw error;
    throw new CliError(`cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  if (text === undefined) return undefined;
  let profile: unknown;
  try {
    profile = JSON.parse(text);
  } catch {
    profile = undefined;
  }
  if (typeof profile !== 'object' || profile === null || Array.isArray(profile) || ('broker' in profile && typeof profile.broker !== 'string')) {
    throw new CliError(`${path} is not a CLI profile (expected {"broker": "https://..."}); fix it or run: jit profile set --broker URL`);
  }
  return profile as Profile;
}

function profileBroker(env: NodeJS.ProcessEnv): BrokerLocation | undefined {
  const profile = readProfile(env);
  return profile?.broker ? { url: profile.broker, source: profileFile(env) } : undefined;
}

/** Writes the profile (directory 0700, file 0600), replacing it whole so no reader sees half a file. */
export function writeProfile(env: NodeJS.ProcessEnv, profile: Profile): string {
  return writeConfigFile(env, 'profile.json', `${JSON.stringify(profile, null, 2)}\n`);
}
