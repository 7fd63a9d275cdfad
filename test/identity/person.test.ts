import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/index.js';
import { createPersonResolver, normalizeName } from '../../src/identity/index.js';
import { baseConfig, createTestIssuers } from '../helpers/broker.js';

/** CONTRACT section 1, "People": one human behind several identities, by person key. */

/**
 * Characters that show as nothing and are not white space: U+115F HANGUL CHOSEONG FILLER, U+1160
 * HANGUL JUNGSEONG FILLER, U+3164 HANGUL FILLER, U+FFA0 HALFWIDTH HANGUL FILLER, U+2800 BRAILLE
 * PATTERN BLANK, U+16FE4 KHITAN SMALL SCRIPT FILLER, U+1D159 MUSICAL SYMBOL NULL NOTEHEAD. Spelled out
 * here, not imported, so the test says what the contract means.
 */
const FILLERS = ['\u115F', '\u1160', '\u3164', '\uFFA0', '\u2800', '\u{16FE4}', '\u{1D159}'];

describe('normalizeName', () => {
  it('makes one name of the spellings of bob: case, trailing and inner white space, zero-width characters, full-width letters', () => {
    const spellings = ['bob', 'Bob', 'BOB', 'Bob ', ' bob', 'b o b', 'bob\t', 'b\u200Bob', 'b\u200Dob', '\uFEFFbob', 'bo\u00ADb', 'b\u2060ob', 'ＢＯＢ', 'ｂｏｂ', 'bob\u00A0', 'bob\u3000'];
    for (const spelling of spellings) expect(normalizeName(spelling), JSON.stringify(spelling)).toBe('bob');
    // Not a spelling of bob: another letter, a look-alike from another script (NFKC keeps Cyrillic о).
    expect(normalizeName('bobb')).not.toBe('bob');
    expect(normalizeName('b\u043Eb')).not.toBe('bob');
  });

  it('folds case fully: straße, STRASSE, Straße and ẞ are one name', () => {
    for (const spelling of ['straße', 'STRASSE', 'Straße', 'STRAẞE', 'strasse', 'Strasse ']) expect(normalizeName(spelling)).toBe('strasse');
    expect(normalizeName('ẞ')).toBe('ss');
    // Simple lower-casing would keep these apart; full folding does not.
    expect('STRASSE'.toLowerCase()).not.toBe('straße'.toLowerCase());
  });

  it('applies NFKC: ligatures, compatibility forms and composed accents are one name', () => {
    expect(normalizeName('ﬁnn')).toBe('finn');
    expect(normalizeName('Ǆemal')).toBe(normalizeName('dže' + 'mal'));
    expect(normalizeName('ｊｏｓé')).toBe(normalizeName('jose\u0301'));
    expect(normalizeName('José')).toBe(normalizeName('JOSE\u0301'));
    expect(normalizeName('①')).toBe('1');
  });

  it('removes invisible format characters: bidi marks and overrides, joiners, tags', () => {
    expect(normalizeName('\u202Ebob\u202C')).toBe('bob');
    expect(normalizeName('b\u200Eo\u200Fb')).toBe('bob');
    expect(normalizeName('bob\u{E0062}')).toBe('bob');
    expect(normalizeName('\u200B \u2060')).toBe('');
    expect(normalizeName('bob\u0000\u0007\u009B')).toBe('bob');
  });

  it('removes fillers, which show as blank: the Hangul fillers and the blank braille pattern', () => {
    for (const filler of FILLERS) {
      for (const spelling of [`bob${filler}`, `${filler}bob`, `b${filler}ob`, `BOB${filler.repeat(3)}`]) expect(normalizeName(spelling), JSON.stringify(spelling)).toBe('bob');
      expect(normalizeName(filler)).toBe('');
    }
    // A braille pattern with dots is a symbol that shows: another name.
    expect(normalizeName('bob\u2801')).not.toBe('bob');
  });

  it('is stable: normalising a normalised name changes nothing, even where removal lets characters compose', () => {
    // U+034F (combining grapheme joiner) keeps e and the accent apart until it is removed.
    const cases = ['e\u034F\u0301', 'E\u200B\u0301', 'a\u00A8', 'ΣΑΣ', 'ǅ', 'ﬃ', 'İstanbul', 'ᾼ', '\u1E9E\u0301', 'Å', 'K'];
    for (const text of cases) {
      const once = normalizeName(text);
      expect(normalizeName(once), JSON.stringify(text)).toBe(once);
    }
    expect(normalizeName('e\u034F\u0301')).toBe('\u00E9');
    // And over many random strings from the troublesome ranges.
    const pool = ['a', 'E', 'ß', 'ẞ', '\u0301', '\u0308', '\u034F', '\u200B', ' ', 'ﬁ', 'Σ', 'ς', 'İ', '\u00A8', 'ǅ', 'K', 'Å', '\u0345', 'ι'];
    let seed = 7;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
    for (let i = 0; i < 2000; i += 1) {
      const text = Array.from({ length: 1 + (next() % 8) }, () => pool[next() % pool.length]).join('');
      const once = normalizeName(text);
      expect(normalizeName(once), JSON.stringify(text)).toBe(once);
    }
  });
});

const issuers = await createTestIssuers();

describe('createPersonResolver', () => {
  /** ci: workload with initiatorClaim; sso: person with usernameClaim; plus issuers without either. */
  const configWith = (people: unknown[] = []) => {
    const raw = baseConfig('/tmp/unused', issuers) as Record<string, any>;
    const [ci, sso] = raw.identity.issuers;
    raw.identity.issuers.push(
      { ...sso, name: 'okta', issuer: 'https://okta.test' },
      { ...sso, name: 'partners', issuer: 'https://partners.test', usernameClaim: undefined },
      { ...ci, name: 'cron', issuer: 'https://cron.test', initiatorClaim: undefined },
      { ...ci, name: 'github', issuer: 'https://github.test' },
    );
    raw.people = people;
    return parseConfig('test', raw);
  };
  const bob = [
    {
      name: 'Bob',
      aliases: [
        { issuer: 'github', username: 'bob-gh' },
        { issuer: 'okta', username: 'bob@acme.com' },
      ],
    },
  ];

  it('gives a person issuer\'s username, normalised, as the key; one name in any spelling is one person', () => {
    const person = createPersonResolver(configWith());
    expect(person({ idp: 'sso', sub: 's-1', username: 'alice' })).toBe('u:alice');
    expect(person({ idp: 'sso', sub: 's-2', username: 'ＡＬＩＣＥ\u200B ' })).toBe('u:alice');
    expect(person({ idp: 'okta', sub: 'o-1', username: 'Alice' })).toBe('u:alice');
  });

  it('makes one person of usernames that differ only by a filler: bob\u2800 cannot approve what bob asked for', () => {
    const person = createPersonResolver(configWith());
    const bob = person({ idp: 'sso', sub: 's-bob', username: 'bob' });
    for (const filler of FILLERS) {
      // The attacker: an account at another issuer whose username is bob's with a blank added.
      for (const username of [`bob${filler}`, `${filler}bob`, `b${filler}ob`]) {
        expect(person({ idp: 'okta', sub: 'mallory', username }), JSON.stringify(username)).toBe(bob);
        expect(person({ idp: 'github', sub: 'repo:evil/x:ref:refs/heads/main', initiator: username }), JSON.stringify(username)).toBe(bob);
      }
      // A username of fillers alone names nobody: refused rather than made a key of nothing.
      expect(() => person({ idp: 'sso', sub: 's-2', username: filler.repeat(2) })).toThrow(/nothing left/);
    }
  });

  it('gives a workload\'s initiator, by the same rule: the job bob started is bob\'s', () => {
    const person = createPersonResolver(configWith());
    expect(person({ idp: 'ci', sub: 'repo:acme/app:ref:refs/heads/main', initiator: 'Bob' })).toBe(person({ idp: 'sso', sub: 'x', username: 'bob' }));
  });

  it('maps usernames through the people aliases, alias names and usernames normalised too', () => {
    const person = createPersonResolver(configWith(bob));
    const key = person({ idp: 'sso', sub: 's-1', username: 'bob' });
    expect(key).toBe('u:bob');
    expect(person({ idp: 'github', sub: 'repo:acme/ml:ref:refs/heads/main', initiator: 'Bob-GH' })).toBe(key);
    expect(person({ idp: 'okta', sub: 'o-7', username: 'BOB@ACME.COM ' })).toBe(key);
  });

  it('applies an alias only at its own issuer: bob-gh elsewhere is someone else', () => {
    const person = createPersonResolver(configWith(bob));
    // The attacker: a username equal to bob's GitHub alias, at another issuer.
    expect(person({ idp: 'ci', sub: 'repo:evil/x:ref:refs/heads/main', initiator: 'bob-gh' })).toBe('u:bob-gh');
    expect(person({ idp: 'sso', sub: 'mallory', username: 'bob@acme.com' })).toBe('u:bob@acme.com');
    expect(person({ idp: 'sso', sub: 'mallory', username: 'bob@acme.com' })).not.toBe(person({ idp: 'okta', sub: 'o-7', username: 'bob@acme.com' }));
  });

  it('gives each identity of a person issuer without usernameClaim a key of its own, equal to no other', () => {
    const person = createPersonResolver(configWith(bob));
    const partner = person({ idp: 'partners', sub: 'bob' });
    expect(partner).toBe('i:partners:bob');
    expect(partner).not.toBe(person({ idp: 'partners', sub: 'bob2' }));
    // Whatever a username looks like, it never forms a key of the other kind.
    for (const username of ['i:partners:bob', 'I:PARTNERS:BOB', 'partners:bob']) {
      expect(person({ idp: 'sso', sub: 'x', username })).not.toBe(partner);
    }
    // Nor does a person named after the key.
    const named = createPersonResolver(configWith([{ name: 'i:partners:bob', aliases: [{ issuer: 'okta', username: 'x' }] }]));
    expect(named({ idp: 'okta', sub: 'o', username: 'x' })).not.toBe(named({ idp: 'partners', sub: 'bob' }));
  });

  it('gives a workload without initiatorClaim no person', () => {
    const person = createPersonResolver(configWith(bob));
    expect(person({ idp: 'cron', sub: 'nightly', initiator: 'bob' })).toBeUndefined();
  });

  it('refuses to answer what it cannot know, rather than answer "nobody"', () => {
    const person = createPersonResolver(configWith(bob));
    expect(() => person({ idp: 'sso', sub: 's-1' })).toThrow(/no username/);
    expect(() => person({ idp: 'ci', sub: 'repo:acme/app:ref:refs/heads/main' })).toThrow(/no initiator/);
    expect(() => person({ idp: 'sso', sub: 's-1', username: '\u200B' })).toThrow(/nothing left/);
    expect(() => person({ idp: 'elsewhere', sub: 's-1', username: 'bob' })).toThrow(/no identity issuer/);
  });
});
