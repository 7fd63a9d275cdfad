import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';

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

/** `jit login`'s file: `{broker, issuer, id_token, expires_at}`, mode 0600. */
export const loginFile = (env: NodeJS.ProcessEnv) => join(configDir(env), 'login.json');

/** The CLI profile: `{broker}`. */
export const profileFile = (env: NodeJS.ProcessEnv) => join(configDir(env), 'profile.json');

/** The CLI's DPoP private key (RFC 9449), a JWK, mode 0600: `jit request --dpop` binds tokens to it. */
export const dpopKeyFile = (env: NodeJS.ProcessEnv) => join(configDir(env), 'dpop.jwk.json');
