import { chmodSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import { CliError } from './errors.js';

/**
 * Where the CLI keeps its own files (`profile.json`, `login.json`, `dpop.jwk.json`): env JIT_CONFIG_DIR, else
 * `$XDG_CONFIG_HOME/jit`, else `~/.config/jit`. One rule for every command that reads or writes
 * there. XDG_CONFIG_HOME counts only when absolute, as the XDG spec says.
 */
export function configDir(env: NodeJS.ProcessEnv): string {
  if (env.JIT_CONFIG_DIR) return env.JIT_CONFIG_DIR;
  if (env.XDG_CONFIG_HOME && isAbsolute(env.XDG_CONFIG_HOME)) return join(env.XDG_CONFIG_HOME, 'jit');
  return join(env.HOME || homedir(), '.config', 'jit');
}

/**
 * The config dir, before the CLI writes a file there: made if missing, and private (mode 0700)
 * whether it was just made or was there already with looser permissions, since it holds the
 * login's ID token and the DPoP private key. One the user cannot change the mode of is refused.
 */
export function privateConfigDir(env: NodeJS.ProcessEnv): string {
  const dir = configDir(env);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  try {
    chmodSync(dir, 0o700); // the mode above applies only to a directory it creates
  } catch (error) {
    throw new CliError(`cannot make the config dir ${dir} private (mode 0700): ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  return dir;
}

/** `jit login`'s file: `{broker, issuer, id_token, expires_at}`, mode 0600. */
export const loginFile = (env: NodeJS.ProcessEnv) => join(configDir(env), 'login.json');

/** The CLI profile: `{broker}`. */
export const profileFile = (env: NodeJS.ProcessEnv) => join(configDir(env), 'profile.json');

/** The CLI's DPoP private key (RFC 9449), a JWK, mode 0600: `jit request --dpop` binds tokens to it. */
export const dpopKeyFile = (env: NodeJS.ProcessEnv) => join(configDir(env), 'dpop.jwk.json');
