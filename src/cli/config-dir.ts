import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, constants, fstatSync, mkdirSync, openSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
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

/**
 * Writes a file of the config dir whole or not at all: a new file, mode 0600, renamed over `name`
 * in the private dir, so no reader sees half a file. New: a file already at the temporary name (one
 * a killed jit left) would keep its own mode when written through, and the rename make it `name`.
 */
export function writeConfigFile(env: NodeJS.ProcessEnv, name: string, text: string): string {
  const dir = privateConfigDir(env);
  const path = join(dir, name);
  const temporary = join(dir, `.${name}.${process.pid}.${randomBytes(4).toString('hex')}`);
  writeFileSync(temporary, text, { mode: 0o600, flag: 'wx' });
  renameSync(temporary, path);
  return path;
}

/**
 * A file of the config dir as the CLI reads it (undefined when there is none), refused, as ssh's
 * StrictModes refuses one, when another user owns it or may write it: the profile says where
 * identity tokens go and the login which identity is used, so whoever can change either could make
 * jit use a broker or an identity of theirs. A file holding a token (`secret`) is refused when
 * others may read it, too. Root's files pass, as with ssh: root can change anything anyway. The
 * checks are of the file opened, so it cannot be swapped between them and the read. A failure to
 * read it is thrown as node's error, for the caller to say what the file is.
 */
export function readConfigFile(path: string, { secret }: { secret: boolean }): string | undefined {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO in the file's place does not hold jit (it is refused below); a file is read as ever.
    fd = openSync(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  try {
    checkConfigFile(path, fstatSync(fd), secret);
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

function checkConfigFile(path: string, stats: { uid: number; mode: number; isFile(): boolean }, secret: boolean): void {
  // Windows has no uid, and its mode bits do not say who may write a file (its ACLs do).
  const uid = process.getuid?.();
  if (uid === undefined) return;
  const mode = (stats.mode & 0o777).toString(8);
  if (!stats.isFile()) throw new CliError(`${path} is not a file; jit does not read it: remove it`);
  if (stats.uid !== uid && stats.uid !== 0) {
    throw new CliError(
      `${path} is owned by another user (uid ${stats.uid}), who could make jit use a broker or an identity of theirs; jit does not read it: remove it, or chown it to yourself and chmod 600 ${path}`,
    );
  }
  if ((stats.mode & 0o022) !== 0) {
    throw new CliError(`${path} is writable by other users (mode ${mode}), who could make jit use a broker or an identity of theirs; jit does not read it: chmod 600 ${path}`);
  }
  if (secret && (stats.mode & 0o044) !== 0) {
    throw new CliError(`${path} is readable by other users (mode ${mode}), and it holds a token; jit does not use it: chmod 600 ${path}, and sign in again (jit login), as others may have read it`);
  }
}

/** `jit login`'s file: `{broker, issuer, id_token, expires_at}`, mode 0600. */
export const loginFile = (env: NodeJS.ProcessEnv) => join(configDir(env), 'login.json');

/** The CLI profile: `{broker}`. */
export const profileFile = (env: NodeJS.ProcessEnv) => join(configDir(env), 'profile.json');

/** The CLI's DPoP private key (RFC 9449), a JWK, mode 0600: `jit request --dpop` binds tokens to it. */
export const dpopKeyFile = (env: NodeJS.ProcessEnv) => join(configDir(env), 'dpop.jwk.json');
