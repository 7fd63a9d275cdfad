import { createCipheriv, createDecipheriv, createHmac, createPrivateKey, createPublicKey, createSecretKey, randomBytes, type JsonWebKey, type KeyObject } from 'node:crypto';
import type { JWK } from 'jose';
import { StartRefused } from '../shared/errors.js';
import { samePublicKey } from '../shared/key-files.js';

/**
 * Private signing keys sealed for the store (the way ORY Hydra and Keycloak keep theirs): AES-256-GCM
 * under a key-encryption key (KEK) that every replica is given and the database never holds, a
 * random 96-bit IV per key, and the key's kid and algorithm as additional authenticated data, so
 * a sealed half moved to another row does not open. Whoever reads the database alone gets
 * ciphertext; whoever writes it cannot make a key of their own pass for the cluster's.
 */

/** The environment variable that gives a replica its key-encryption key(s). */
export const KEY_ENCRYPTION_KEY_ENV = 'BROKER_KEY_ENCRYPTION_KEY';

const VERSION = 'v1';
const IV_BYTES = 12;
/** Node accepts a truncated GCM tag unless told its length: a forger would need far fewer tries. */
const TAG_BYTES = 16;

export interface KeyEncryptionKey {
  /** Names the key in sealed values and messages; derived one way, so it tells nothing of the key. */
  readonly id: string;
  /** A KeyObject, never a Buffer: it prints and serialises as nothing, so no log line can carry it. */
  readonly key: KeyObject;
}

/** The first seals; every one opens (more than one only while the KEK is being rotated). */
export type KeyEncryptionKeys = readonly [KeyEncryptionKey, ...KeyEncryptionKey[]];

/** A sealed private half that none of the key-encryption keys given opens: the wrong KEK, or an altered row. */
export class KeyEncryptionKeyMismatch extends StartRefused {
  constructor(
    readonly kid: string,
    readonly sealedUnder: string,
    readonly given: readonly string[],
  ) {
    super(
      'ERR_KEK_MISMATCH',
      `signing key ${kid} in the store cannot be opened: AES-256-GCM authentication failed under every key-encryption key given ` +
        `(it was sealed under key-encryption key ${sealedUnder}; this replica has ${given.join(', ')}). ` +
        `Give every replica the same ${KEY_ENCRYPTION_KEY_ENV} (or signing.keyEncryptionKeyFile); a row altered in the database fails the same way.`,
    );
  }
}

/** A sealed value this release cannot read, or a private half that is not the published key's. */
export class SealedKeyUnreadable extends StartRefused {
  constructor(
    readonly kid: string,
    problem: string,
  ) {
    super('ERR_SEALED_KEY_UNREADABLE', `signing key ${kid} in the store cannot be used: ${problem}`);
  }
}

const BASE64_32_BYTES = /^[A-Za-z0-9+/_-]{43}=?$/;

/**
 * Key-encryption keys from their text: base64 (or base64url) of 32 random bytes each, separated by
 * commas or line breaks, the sealing one first. Undefined when the text holds none or any other
 * word; the caller says where it came from, never what it held.
 */
export function parseKeyEncryptionKeys(text: string): KeyEncryptionKeys | undefined {
  const words = text.split(/[\s,]+/).filter((word) => word !== '');
  if (words.length === 0 || !words.every((word) => BASE64_32_BYTES.test(word))) return undefined;
  const keys = words.map((word) => {
    const raw = Buffer.from(word.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
    const id = createHmac('sha256', raw).update('jit-broker key-encryption key id').digest('hex').slice(0, 16);
    const key = { id, key: createSecretKey(raw) };
    raw.fill(0);
    return key;
  });
  return keys as unknown as KeyEncryptionKeys;
}

/** What a sealed half is bound to: opened for another kid, algorithm or KEK, it fails authentication. */
const associatedData = (kekId: string, kid: string, alg: string) => Buffer.from([VERSION, kekId, kid, alg].join('\0'));

/** Seals a private JWK under the first key-encryption key: `v1.<kek id>.<iv>.<ciphertext>.<tag>`, base64url. */
export function sealPrivateJwk(keys: KeyEncryptionKeys, jwk: JWK, bound: { kid: string; alg: string }): string {
  const [kek] = keys;
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', kek.key, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(associatedData(kek.id, bound.kid, bound.alg));
  const plaintext = Buffer.from(JSON.stringify(jwk));
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  plaintext.fill(0);
  return [VERSION, kek.id, ...[iv, ciphertext, cipher.getAuthTag()].map((part) => part.toString('base64url'))].join('.');
}

/** The KEK id a sealed value names, undefined for anything else. */
export const sealedUnder = (sealed: string): string | undefined => (sealed.startsWith(`${VERSION}.`) ? sealed.split('.')[1] : undefined);

/**
 * Opens a sealed private half as a node:crypto key, and checks that it is the private half of
 * `publicJwk`: the published key is not authenticated on its own, so a row whose public half
 * was swapped for another would otherwise be vouched for by a sealed half that does open.
 */
export function openSealedKey(keys: KeyEncryptionKeys, sealed: string, published: { kid: string; alg: string; publicJwk: JWK }): KeyObject {
  const { kid, alg } = published;
  const parts = sealed.split('.');
  const [version, kekId, iv, ciphertext, tag] = parts;
  if (parts.length !== 5 || version !== VERSION || !kekId || iv === undefined || ciphertext === undefined || tag === undefined) {
    throw new SealedKeyUnreadable(kid, 'its sealed private half is not in a form this release knows');
  }
  // The KEK it names first; the others too, since the id is only a hint until authenticated.
  const candidates = [...keys].sort((a, b) => Number(b.id === kekId) - Number(a.id === kekId));
  for (const kek of candidates) {
    let plaintext: Buffer;
    try {
      const decipher = createDecipheriv('aes-256-gcm', kek.key, Buffer.from(iv, 'base64url'), { authTagLength: TAG_BYTES });
      decipher.setAAD(associatedData(kekId, kid, alg));
      decipher.setAuthTag(Buffer.from(tag, 'base64url'));
      plaintext = Buffer.concat([decipher.update(Buffer.from(ciphertext, 'base64url')), decipher.final()]);
    } catch {
      continue; // not this KEK (or an altered value): authentication failed
    }
    try {
      const privateKey = createPrivateKey({ key: JSON.parse(plaintext.toString('utf8')) as JsonWebKey, format: 'jwk' });
      if (!samePublicKey(createPublicKey(privateKey).export({ format: 'jwk' }) as JWK, published.publicJwk)) {
        throw new SealedKeyUnreadable(kid, 'its private half is not the one of the public key published under its kid');
      }
      return privateKey;
    } catch (error) {
      if (error instanceof SealedKeyUnreadable) throw error;
      throw new SealedKeyUnreadable(kid, 'its sealed private half opens but holds no private key');
    } finally {
      plaintext.fill(0);
    }
  }
  throw new KeyEncryptionKeyMismatch(kid, kekId, keys.map((kek) => kek.id));
}

