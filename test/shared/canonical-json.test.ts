import { describe, expect, it } from 'vitest';
import { canonicalEvent, canonicalParts } from '../../src/shared/chain-hash.js';
import { canonicalJson } from '../../src/shared/canonical-json.js';

/** The bytes the audit chain and request digests hash: one value, one text, on every engine. */
describe('canonical JSON', () => {
  it('sorts keys at every depth and leaves no white space', () => {
    expect(canonicalJson({ b: 1, a: { d: [3, { f: true, e: null }], c: 'x' } })).toBe('{"a":{"c":"x","d":[3,{"e":null,"f":true}]},"b":1}');
  });

  it('orders keys by UTF-16 code units, as RFC 8785 does (not by code points)', () => {
    // U+1F600 is the surrogate pair D83D DE00, which sorts before U+FF5A although its code point is larger.
    expect(canonicalJson({ '\uFF5A': 1, '\u{1F600}': 2, é: 3, z: 4, Z: 5 })).toBe('{"Z":5,"z":4,"é":3,"😀":2,"ｚ":1}');
  });

  it('leaves out undefined members and writes undefined array items as null, as JSON.stringify does', () => {
    const value = { a: undefined, b: [undefined, 1], c: 2 };
    expect(canonicalJson(value)).toBe('{"b":[null,1],"c":2}');
    expect(canonicalJson(value)).toBe(JSON.stringify({ b: [null, 1], c: 2 }));
    expect(canonicalJson({})).toBe('{}');
    expect(canonicalJson([])).toBe('[]');
    expect(canonicalJson({ only: undefined })).toBe('{}');
  });

  it('escapes names and strings as JSON does', () => {
    expect(canonicalJson({ 'a"b': 'line\nbreak\u2028' })).toBe('{"a\\"b":"line\\nbreak\u2028"}');
    expect(JSON.parse(canonicalJson({ 'a"b': 'line\nbreak' }))).toEqual({ 'a"b': 'line\nbreak' });
  });

  it('refuses what JSON cannot hold', () => {
    expect(() => canonicalJson(undefined)).toThrow(TypeError);
    expect(() => canonicalJson(() => 1)).toThrow(TypeError);
  });

  it('gives an event the same text whole or in the two parts around its seq (the PostgreSQL appender assigns the seq)', () => {
    const event = { at: '2026-12-07T12:00:00.000Z', type: 'credential.issued', actor: { iss: 'https://i', sub: 's' }, requestId: 'r1', data: { z: 1, a: [{ y: 2, b: 3 }] } };
    const { before, after } = canonicalParts(event, canonicalJson(event.data));
    expect(`${before}42${after}`).toBe(canonicalEvent({ ...event, seq: 42 }));
  });
});
