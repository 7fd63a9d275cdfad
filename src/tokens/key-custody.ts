import { ConfigError, databaseEngine, type BrokerConfig } from '../config/index.js';
import { readPrivateFile } from '../shared/key-files.js';
import { KEY_ENCRYPTION_KEY_ENV, parseKeyEncryptionKeys, type KeyEncryptionKeys } from './key-encryption.js';

/**
 * Where the private halves of the signing keys live:
 * - `store`: sealed in the database under the key-encryption keys (whenever one is given). Every
 *   process on the database signs with the cluster's current key, so one that joins signs at once.
 *   `keyDir` is only read, for key files made before (sealed into the store at start).
 * - `files`: files under `keyDir`, each key directory's processes signing with its keys (SQLite without a
 *   key-encryption key: the embedded default, as it always was).
 */
export type KeyCustody = { kind: 'store'; keys: KeyEncryptionKeys; keyDir: string } | { kind: 'files'; keyDir: string };

const FORMAT = 'base64 of 32 random bytes (openssl rand -base64 32), several separated by commas or line breaks, the sealing one first';

/**
 * The custody the configuration and environment ask for, with the key-encryption keys read from
 * env `BROKER_KEY_ENCRYPTION_KEY` or `signing.keyEncryptionKeyFile` (mode 0600). Refused, with
 * one line per problem and never the key's text: both sources at once, a malformed key, a key file
 * others can read, and PostgreSQL without a key-encryption key. There, each replica would keep a
 * key of its own, and one joining a running set could sign only once its key had been published
 * for `publishAhead`: CONTRACT section 5 says it never waits.
 */
export function keyCustody(config: Pick<BrokerConfig, 'database' | 'signing'>, env: NodeJS.ProcessEnv, file = 'configuration'): KeyCustody {
  const { keyDir, keyEncryptionKeyFile } = config.signing;
  const fromEnv = env[KEY_ENCRYPTION_KEY_ENV];
  if (fromEnv !== undefined && keyEncryptionKeyFile !== undefined) {
    throw new ConfigError(file, [`signing.keyEncryptionKeyFile: give the key-encryption key once, in this file or in env ${KEY_ENCRYPTION_KEY_ENV}, not both`]);
  }

  let keys: KeyEncryptionKeys | undefined;
  if (fromEnv !== undefined) {
    keys = parseKeyEncryptionKeys(fromEnv);
    if (!keys) throw new ConfigError(file, [`env ${KEY_ENCRYPTION_KEY_ENV}: ${fromEnv.trim() === '' ? 'is set but empty' : `not a key-encryption key: ${FORMAT}`}`]);
  } else if (keyEncryptionKeyFile !== undefined) {
    let text: string;
    try {
      text = readPrivateFile(keyEncryptionKeyFile);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      throw new ConfigError(keyEncryptionKeyFile, [`signing.keyEncryptionKeyFile: ${code ? `cannot read the file (${code})` : (error as Error).message}`]);
    }
    keys = parseKeyEncryptionKeys(text);
    if (!keys) throw new ConfigError(keyEncryptionKeyFile, [`signing.keyEncryptionKeyFile: not a key-encryption key: ${FORMAT}`]);
  }

  if (keys) return { kind: 'store', keys, keyDir };
  if (databaseEngine(config.database) === 'postgres') {
    throw new ConfigError(file, [
      `signing: PostgreSQL needs a key-encryption key (env ${KEY_ENCRYPTION_KEY_ENV} or signing.keyEncryptionKeyFile), the same on every replica: ` +
        'without one each replica keeps a private key of its own, and a replica joining a running set could not sign before its key had been published for signing.publishAhead',
    ]);
  }
  return { kind: 'files', keyDir };
}
