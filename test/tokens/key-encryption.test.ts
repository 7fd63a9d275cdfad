import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { chmodSync } from 'node:fs';
import type { JWK } from 'jose';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config/index.js';
import { publicJwk } from '../../src/shared/key-files.js';
import {
  KEY_ENCRYPTION_KEY_ENV,
  KeyEncryptionKeyMismatch,
  keyCustody,
  openSealedKey,
  parseKeyEncryptionKeys,
  SealedKeyUnreadable,
  type KeyEncryptionKeys,
} from '../../src/tokens/index.js';
import { sealPrivateJwk } from '../../src/tokens/key-encryption.js';
import { writeKeyEncryptionKeyFile } from '../helpers/broker.js';
import { tempDir } from '../helpers/temp.js';

/**
 * Private signing keys sealed for the store: AES-256-GCM under the key-encryption key, bound to
 * their row (kid and algorithm), opened only as the private half of the key published under that
 * kid; and the key-encryption key taken only from where it belongs, never echoed.
 */

const newKek = () => randomBytes(32).toString('base64');
const keksOf = (...texts: string[]) => parseKeyEncryptionKeys(texts.join(',')) as KeyEncryptionKeys;
const privateJwk = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }) as JWK;
const row = (jwk: JWK, kid = 'kid-1', alg = 'ES256') => ({ kid, alg, publicJwk: publicJwk(jwk) });

const refusal = (run: () => unknown): string[] => {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as ConfigError).problems;
  }
  throw new Error('expected a refusal');
};

describe('a sealed private key', () => {
  it('opens under its key-encryption key as the private half of the published key, and holds nothing in clear', () => {
    const keks = keksOf(newKek());
    const jwk = privateJwk();
    const sealed = sealPrivateJwk(keks, jwk, row(jwk));
    expect(sealed).toMatch(/^v1\.[0-9a-f]{16}(\.[A-Za-z0-9_-]+){3}$/);
    expect(sealed).not.toContain(jwk.d);
    expect(Buffer.from(sealed.split('.')[2] as string, 'base64url')).toHaveLength(12); // a 96-bit IV
    expect(openSealedKey(keks, sealed, row(jwk)).export({ format: 'jwk' }).d).toBe(jwk.d);
    // A fresh IV each time: one key sealed twice gives two ciphertexts.
    expect(sealPrivateJwk(keks, jwk, row(jwk))).not.toBe(sealed);
  });

  it('fails GCM authentication under another key-encryption key, naming both keys by id and never their text', () => {
    const right = newKek();
    const wrong = newKek();
    const jwk = privateJwk();
    const sealed = sealPrivateJwk(keksOf(right), jwk, row(jwk));
    let error: unknown;
    try {
      openSealedKey(keksOf(wrong), sealed, row(jwk));
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(KeyEncryptionKeyMismatch);
    expect(error).toMatchObject({ code: 'ERR_KEK_MISMATCH', kid: 'kid-1', sealedUnder: keksOf(right)[0].id, given: [keksOf(wrong)[0].id] });
    expect((error as Error).message).toContain('AES-256-GCM authentication failed');
    expect((error as Error).message).not.toContain(right);
    expect((error as Error).message).not.toContain(wrong);
  });

  it('cannot be moved to another row: another kid or algorithm fails authentication', () => {
    const keks = keksOf(newKek());
    const jwk = privateJwk();
    const sealed = sealPrivateJwk(keks, jwk, row(jwk));
    expect(() => openSealedKey(keks, sealed, row(jwk, 'kid-2'))).toThrow(KeyEncryptionKeyMismatch);
    expect(() => openSealedKey(keks, sealed, row(jwk, 'kid-1', 'RS256'))).toThrow(KeyEncryptionKeyMismatch);
  });

  it('refuses an altered ciphertext, a truncated tag, and a public half swapped for another key', () => {
    const keks = keksOf(newKek());
    const jwk = privateJwk();
    const sealed = sealPrivateJwk(keks, jwk, row(jwk));
    const parts = sealed.split('.');
    const flipped = Buffer.from(parts[3] as string, 'base64url');
    flipped[0] = (flipped[0] as number) ^ 1;
    expect(() => openSealedKey(keks, [...parts.slice(0, 3), flipped.toString('base64url'), parts[4]].join('.'), row(jwk))).toThrow(KeyEncryptionKeyMismatch);
    const shortTag = Buffer.from(parts[4] as string, 'base64url').subarray(0, 4).toString('base64url');
    expect(() => openSealedKey(keks, [...parts.slice(0, 4), shortTag].join('.'), row(jwk))).toThrow(KeyEncryptionKeyMismatch);
    expect(() => openSealedKey(keks, 'v0.abc', row(jwk))).toThrow(SealedKeyUnreadable);
    // Whoever writes the database could publish their own key under a kid whose sealed half opens.
    const intruder = privateJwk();
    expect(() => openSealedKey(keks, sealed, { ...row(jwk), publicJwk: publicJwk(intruder) })).toThrow(/not the one of the public key published/);
  });

  it('during a key-encryption key rotation: seals under the first, opens under any', () => {
    const [old, next] = [newKek(), newKek()];
    const jwk = privateJwk();
    const underOld = sealPrivateJwk(keksOf(old), jwk, row(jwk));
    const rotating = keksOf(next, old);
    expect(openSealedKey(rotating, underOld, row(jwk)).export({ format: 'jwk' }).d).toBe(jwk.d);
    const underNext = sealPrivateJwk(rotating, jwk, row(jwk));
    expect(underNext.split('.')[1]).toBe(keksOf(next)[0].id);
    expect(openSealedKey(keksOf(old, next), underNext, row(jwk)).export({ format: 'jwk' }).d).toBe(jwk.d);
  });
});

describe('the key-encryption key', () => {
  const sqlite = (signing: Record<string, unknown> = {}) => ({ database: './data/broker.db', signing: { keyDir: './data/keys', ...signing } }) as never;
  const postgres = (signing: Record<string, unknown> = {}) => ({ database: 'postgres://broker@db.internal/jit', signing: { keyDir: './data/keys', ...signing } }) as never;

  it('is taken from env BROKER_KEY_ENCRYPTION_KEY or a file of mode 0600; without one, SQLite keeps key files', () => {
    const kek = newKek();
    expect(keyCustody(postgres(), { [KEY_ENCRYPTION_KEY_ENV]: kek })).toMatchObject({ kind: 'store', keys: [{ id: keksOf(kek)[0].id }] });
    const file = writeKeyEncryptionKeyFile(tempDir('jit-kek-'), kek);
    expect(keyCustody(postgres({ keyEncryptionKeyFile: file }), {})).toMatchObject({ kind: 'store', keys: [{ id: keksOf(kek)[0].id }] });
    expect(keyCustody(sqlite({ keyEncryptionKeyFile: file }), {})).toMatchObject({ kind: 'store' });
    expect(keyCustody(sqlite(), {})).toEqual({ kind: 'files', keyDir: './data/keys' });
  });

  it('is required on PostgreSQL: a replica without one would wait publishAhead before it could sign', () => {
    const [problem] = refusal(() => keyCustody(postgres(), {}));
    expect(problem).toMatch(/^signing: PostgreSQL needs a key-encryption key \(env BROKER_KEY_ENCRYPTION_KEY or signing\.keyEncryptionKeyFile\)/);
    expect(problem).toContain('publishAhead');
  });

  it('in a file others can read is refused, as are a missing file, two sources, and text that is no key, never repeating it', () => {
    const dir = tempDir('jit-kek-');
    const kek = newKek();
    const file = writeKeyEncryptionKeyFile(dir, kek);
    chmodSync(file, 0o640);
    expect(refusal(() => keyCustody(postgres({ keyEncryptionKeyFile: file }), {}))).toEqual([
      `signing.keyEncryptionKeyFile: ${file} is readable by other users (mode 640); chmod 600 it`,
    ]);
    expect(refusal(() => keyCustody(postgres({ keyEncryptionKeyFile: `${dir}/none` }), {}))).toEqual(['signing.keyEncryptionKeyFile: cannot read the file (ENOENT)']);
    chmodSync(file, 0o600);
    expect(refusal(() => keyCustody(postgres({ keyEncryptionKeyFile: file }), { [KEY_ENCRYPTION_KEY_ENV]: kek }))[0]).toContain('not both');

    const secretish = 'correct horse battery staple';
    for (const text of [secretish, randomBytes(16).toString('base64'), `${kek},${secretish}`]) {
      const problems = refusal(() => keyCustody(postgres(), { [KEY_ENCRYPTION_KEY_ENV]: text }));
      expect(problems).toEqual([expect.stringMatching(/^env BROKER_KEY_ENCRYPTION_KEY: not a key-encryption key: base64 of 32 random bytes/)]);
      expect(problems.join('\n')).not.toContain(secretish);
      expect(problems.join('\n')).not.toContain(kek);
    }
    expect(refusal(() => keyCustody(sqlite(), { [KEY_ENCRYPTION_KEY_ENV]: ' ' }))).toEqual(['env BROKER_KEY_ENCRYPTION_KEY: is set but empty']);
  });
});
