import { generateKeyPairSync, randomBytes } from 'node:crypto';
import type { JWK } from 'jose';
import { describe, expect, it } from 'vitest';
import { publicJwk } from '../../src/shared/key-files.js';
import {
  KeyEncryptionKeyMismatch,
  openSealedKey,
  parseKeyEncryptionKeys,
  SealedKeyUnreadable,
  type KeyEncryptionKeys,
} from '../../src/tokens/index.js';
import { sealPrivateJwk } from '../../src/tokens/key-encryption.js';

/**
 * Private signing keys sealed for the store: AES-256-GCM under the key-encryption key, bound to
 * their row (kid and algorithm), opened only as the private half of the key published under that
 * kid.
 */

const newKek = () => randomBytes(32).toString('base64');
const keksOf = (...texts: string[]) => parseKeyEncryptionKeys(texts.join(',')) as KeyEncryptionKeys;
const privateJwk = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }) as JWK;
const row = (jwk: JWK, kid = 'kid-1', alg = 'ES256') => ({ kid, alg, publicJwk: publicJwk(jwk) });

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
