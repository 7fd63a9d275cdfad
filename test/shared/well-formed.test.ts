import { describe, expect, it } from 'vitest';
import { malformedText } from '../../src/shared/well-formed.js';

describe('malformedText', () => {
  it('is undefined when every name and string at any depth is well-formed', () => {
    expect(malformedText({ a: ['x', { b: 'y', '\u{1F600}': 'z\u{1F600}' }], n: 1, t: true, u: null })).toBeUndefined();
    expect(malformedText('plain')).toBeUndefined();
    expect(malformedText(undefined)).toBeUndefined();
  });

  it('gives the path to a lone surrogate in a value, or in a member name', () => {
    expect(malformedText({ a: ['x', { b: 'bad\uD800' }] })).toEqual(['a', 1, 'b']);
    expect(malformedText({ a: { ['\uDC00name']: 'fine' } })).toEqual(['a', '\uDC00name']);
    expect(malformedText('\uDFFF')).toEqual([]);
    expect(malformedText(['ok', 'ok', '\uD83D'])).toEqual([2]);
  });

  it('reads own members only, and survives any depth', () => {
    const inherited = Object.create({ bad: '\uD800' }) as Record<string, unknown>;
    inherited.good = 'fine';
    expect(malformedText(inherited)).toBeUndefined();
    let deep: unknown = 'bad\uD800';
    for (let i = 0; i < 100_000; i += 1) deep = [deep];
    expect(malformedText(deep)?.length).toBe(100_000);
  });
});
