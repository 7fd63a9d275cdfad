import { caseFold } from 'unicode-case-folding';

/**
 * White space, and characters that do not show: zero-width spaces and joiners, bidi marks, soft
 * hyphens, tags, and control characters (removing more can only make more names one name, which
 * restricts, never grants).
 */
const INVISIBLE = /[\p{White_Space}\p{Default_Ignorable_Code_Point}\p{Cf}\p{Cc}]/gu;

/**
 * A few passes always suffice: removing an invisible character can only let two neighbours
 * compose once more. The bound keeps a hostile string from looping; the result of the last
 * pass is used either way.
 */
const MAX_PASSES = 4;

const pass = (text: string): string => caseFold(text.normalize('NFKC')).normalize('NFKC').replace(INVISIBLE, '');

/**
 * The form in which names are compared: Unicode NFKC, full case folding, then every white space,
 * control and invisible character removed, repeated until nothing changes. So `Bob `, `b\u200Bob` and
 * `ＢＯＢ` are `bob`, and `Straße`, `STRASSE` and `STRAẞE` are `strasse`: a name spelled another way is
 * the same name, and cannot pass for someone else.
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
