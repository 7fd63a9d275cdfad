import { caseFold } from 'unicode-case-folding';
import { INVISIBLE } from './invisible.js';

/**
 * A few passes always suffice: removing an invisible character can only let two neighbours
 * compose once more. The bound keeps a hostile string from looping; the result of the last
 * pass is used either way.
 */
const MAX_PASSES = 4;

const pass = (text: string): string => caseFold(text.normalize('NFKC')).normalize('NFKC').replace(INVISIBLE, '');

/**
 * The form in which names are compared: Unicode NFKC, full case folding, then every character
 * that does not show (white space, control, invisible format and filler characters) removed,
 * repeated until nothing changes. So `Bob `, `b\u200Bob`, `bob\u2800` and `ＢＯＢ` are `bob`, and
 * `Straße`, `STRASSE` and `STRAẞE` are `strasse`: a name spelled another way is the same name,
 * and cannot pass for someone else (removing more can only make more names one name, which
 * restricts, never grants).
 */
export function normalizeName(text: string): string {
  let current = text;
  for (let i = 0; i < MAX_PASSES; i += 1) {
    const next = pass(current);
    if (next === current) return next;
    current = next;
  }
  return current;
}
