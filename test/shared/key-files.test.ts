import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readPrivateJwk, writePrivateJwk } from '../../src/shared/key-files.js';
import { tempDir } from '../helpers/temp.js';

describe('private key files', () => {
  const dir = tempDir('jit-key-files-');

  it('are written whole, mode 0600, with nothing else left in the directory', () => {
    const path = join(dir, 'one.jwk');
    writePrivateJwk(path, { kty: 'OKP', crv: 'Ed25519', x: 'x', d: 'secret' });
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readPrivateJwk(path)).toEqual({ kty: 'OKP', crv: 'Ed25519', x: 'x', d: 'secret' });
    expect(readdirSync(dir)).toEqual(['one.jwk']);
  });

  it('never replace another: EEXIST, the first key kept, nothing left behind', () => {
    const path = join(dir, 'two.jwk');
    writeFileSync(path, '{"kty":"OKP","d":"first"}\n', { mode: 0o600 });
    expect(() => writePrivateJwk(path, { kty: 'OKP', d: 'second' })).toThrow(expect.objectContaining({ code: 'EEXIST' }));
    expect(readFileSync(path, 'utf8')).toBe('{"kty":"OKP","d":"first"}\n');
    expect(readdirSync(dir).sort()).toEqual(['one.jwk', 'two.jwk']);
  });
});
