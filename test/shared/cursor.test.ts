import { describe, expect, it } from 'vitest';
import { decodeCursor, encodeCursor } from '../../src/shared/cursor.js';
import { InvalidRequest } from '../../src/shared/errors.js';

const crafted = (key: unknown) => Buffer.from(JSON.stringify(key)).toString('base64url');

describe('decodeCursor', () => {
  it('gives back the key of a cursor a listing gave out', () => {
    expect(decodeCursor(encodeCursor([1796640000000, '01938d5e-8a2b-7c4d-9e1f-3b5d7f9a1c2e']), ['number', 'string'] as const)).toEqual([1796640000000, '01938d5e-8a2b-7c4d-9e1f-3b5d7f9a1c2e']);
    expect(decodeCursor(undefined, ['number'] as const)).toBeUndefined();
  });

  it.each([
    ['a fraction', [1.5, 'x']],
    ['a number past 2^53', [1e308, 'x']],
    ['a NUL in its text', [1, 'a\u0000b']],
    ['a lone surrogate in its text', [1, '\uD800']],
    ['the wrong shape', ['x', 1]],
    ['too many parts', [1, 'x', 'y']],
    ['no array', { a: 1 }],
  ])('refuses a cursor with %s (400), which no listing gives out', (_what, key) => {
    expect(() => decodeCursor(crafted(key), ['number', 'string'] as const)).toThrow(InvalidRequest);
  });

  it('refuses what is not base64url JSON', () => {
    expect(() => decodeCursor('%%%', ['number'] as const)).toThrow(InvalidRequest);
    expect(() => decodeCursor(Buffer.from('[1').toString('base64url'), ['number'] as const)).toThrow(InvalidRequest);
  });
});
