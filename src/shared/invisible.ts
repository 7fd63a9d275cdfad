/**
 * What does not show on a screen, defined once: names are compared with it removed, and a
 * break-glass justification is measured without it (CONTRACT sections 1 and 4).
 */

/**
 * Fillers: characters that stand for nothing and show as blank, yet are neither white space nor
 * format characters. The Hangul fillers (U+115F, U+1160, U+3164 and its half-width U+FFA0) are
 * letters to Unicode, default-ignorable; U+2800 BRAILLE PATTERN BLANK and U+1D159 MUSICAL SYMBOL
 * NULL NOTEHEAD (a notehead with no glyph, listed among the invisible characters) are symbols, and
 * U+16FE4 KHITAN SMALL SCRIPT FILLER a combining mark, and none of them is.
 */
const FILLERS = '\\u115F\\u1160\\u3164\\uFFA0\\u2800\\u{16FE4}\\u{1D159}';

/**
 * Characters that do not show, as the body of a regex class: white space, default-ignorable
 * characters (zero-width spaces and joiners, variation selectors, the Hangul fillers), format
 * characters (bidi marks, soft hyphens, tags), control characters, and the fillers.
 */
export const NOT_SHOWING = `\\p{White_Space}\\p{Default_Ignorable_Code_Point}\\p{Cf}\\p{Cc}${FILLERS}`;

/** Each character that does not show (global: for `replace`). */
export const INVISIBLE = new RegExp(`[${NOT_SHOWING}]`, 'gu');

/** Each character that shows: a letter, digit, punctuation mark or symbol that is not one of the above (global: for `match`). */
export const SHOWING = new RegExp(`(?![${NOT_SHOWING}])[\\p{L}\\p{N}\\p{P}\\p{S}]`, 'gu');
