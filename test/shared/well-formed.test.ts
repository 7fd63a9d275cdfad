import { describe, expect, it } from 'vitest';
import { malformedText, truncate } from '../../src/shared/well-formed.js';

const LONE = 'must be well-formed Unicode (no lone surrogates)';
const NUL = 'must not hold NUL (U+0000)';

describe('malformedText', () => {
  it('is undefined when every name and string at any depth is well-formed', () => {
    expect(malformedText({ a: ['x', { b: 'y', '\u{1F600}': 'z\u{1F600}' }], n: 1, t: true, u: null })).toBeUndefined();
    expect(malformedText('plain')).toBeUndefined();
    expect(malformedText(undefined)).toBeUndefined();
  });

  it('gives the path to a lone surrogate in a value, or in a member name', () => {
    expect(malformedText({ a: ['x', { b: 'bad\uD800' }] })).toEqual({ path: ['a', 1, 'b'], detail: LONE });
    expect(malformedText({ a: { ['\uDC00name']: 'fine' } })).toEqual({ path: ['a', '\uDC00name'], detail: LONE });
    expect(malformedText('\uDFFF')).toEqual({ path: [], detail: LONE });
    expect(malformedText(['ok', 'ok', '\uD83D'])).toEqual({ path: [2], detail: LONE });
  });

  it('gives the path to a NUL, anywhere in a value or a member name, and names it', () => {
    expect(malformedText({ a: ['x', { b: 'repo\u0000x' }] })).toEqual({ path: ['a', 1, 'b'], detail: NUL });
    expect(malformedText({ ['na\u0000me']: 'fine' })).toEqual({ path: ['na\u0000me'], detail: NUL });
    expect(malformedText('\u0000')).toEqual({ path: [], detail: NUL });
    // Other control characters are the schemas' to refuse, field by field (tab and newline are text in some).
    expect(malformedText('a\tb\nc\u0001')).toBeUndefined();
  });

  it('reads own members only, and survives any depth', () => {
    const inherited = Object.create({ bad: '\uD800' }) as Record<string, unknown>;
    inherited.good = 'fine';
    expect(malformedText(inherited)).toBeUndefined();
    let deep: unknown = 'bad\uD800';
    for (let i = 0; i < 100_000; i += 1) deep = [deep];
    expect(malformedText(deep)?.path.length).toBe(100_000);
  });
});

describe('truncate', () => {
  it('keeps a text within the bound whole, and cuts a longer one to the bound, mark included', () => {
    expect(truncate('abc', 3, '…')).toBe('abc');
    expect(truncate('abcd', 3, '…')).toBe('ab…');
    expect(truncate('abcd', 3)).toBe('abc');
  });

  it('never splits a surrogate pair: the character across the cut is left out whole', () => {
    expect(truncate('ab😀cd', 3)).toBe('ab');
    expect(truncate('ab😀cd', 4, '…')).toBe('ab…');
    expect(truncate('ab😀cd', 4)).toBe('ab😀');
    for (let max = 1; max < 12; max += 1) expect(malformedText(truncate('😀'.repeat(6), max, '…'))).toBeUndefined();
  });
});
