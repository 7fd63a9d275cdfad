/**
 * CONTRACT sections 1 and 4: text that is not well-formed Unicode (a lone surrogate) is refused,
 * in identity tokens and in every request. A lone surrogate has no one meaning: normalising,
 * comparing, storing and hashing it differ by layer (the two store engines keep different bytes),
 * so a value holding one could be two values at once. So is text holding NUL (U+0000), a control
 * character: PostgreSQL stores none in text or jsonb, where SQLite does (the engines would answer
 * one request differently), and whatever reads a value as a C string downstream ends it there.
 */

/** ES2024's String.prototype.isWellFormed: false for a lone surrogate. Node 20 has it; the lib typings here stop at ES2023. */
const isWellFormed = (text: string): boolean => (text as string & { isWellFormed(): boolean }).isWellFormed();

/** What is wrong with one text the broker is given, or undefined when it may be taken in. */
export function textProblem(text: string): string | undefined {
  if (!isWellFormed(text)) return 'must be well-formed Unicode (no lone surrogates)';
  if (text.includes('\u0000')) return 'must not hold NUL (U+0000)';
  return undefined;
}

/**
 * The first `max` UTF-16 units of `text`, one fewer where the cut would split a surrogate pair
 * (an emoji): a shortened text stays well-formed. With `mark`, a text that was cut ends in it,
 * within `max`.
 */
export function truncate(text: string, max: number, mark = ''): string {
  if (text.length <= max) return text;
  let end = max - mark.length;
  const last = text.charCodeAt(end - 1);
  if (last >= 0xd800 && last <= 0xdbff) end -= 1;
  return text.slice(0, end) + mark;
}

const acceptable = (text: string) => textProblem(text) === undefined;

/** Where a refused text lies in a value (the path to it: a refused member name ends it), and what is wrong with it. */
export interface MalformedText {
  path: (string | number)[];
  detail: string;
}

/**
 * The first string of a value, names and values at any depth, that `textProblem` refuses;
 * undefined when there is none. Iterative, so no nesting depth can exhaust the stack.
 */
export function malformedText(value: unknown): MalformedText | undefined {
  return allAcceptable(value) ? undefined : findMalformed(value);
}

/** The check alone, run on every body and identity token: no path is built while all is well. */
function allAcceptable(value: unknown): boolean {
  const pending: unknown[] = [value];
  while (pending.length > 0) {
    const item = pending.pop();
    if (typeof item === 'string') {
      if (!acceptable(item)) return false;
    } else if (Array.isArray(item)) {
      for (const element of item) pending.push(element);
    } else if (typeof item === 'object' && item !== null) {
      for (const name in item) {
        if (!Object.hasOwn(item, name)) continue;
        if (!acceptable(name)) return false;
        pending.push((item as Record<string, unknown>)[name]);
      }
    }
  }
  return true;
}

/** Where it lies: each pending value keeps a link to its parent's place, so no depth costs more than once. */
function findMalformed(value: unknown): MalformedText | undefined {
  interface Place {
    parent: Place | undefined;
    key: string | number;
  }
  const pathOf = (place: Place | undefined, last?: string): (string | number)[] => {
    const path: (string | number)[] = last === undefined ? [] : [last];
    for (let at = place; at; at = at.parent) path.push(at.key);
    return path.reverse();
  };
  const pending: [unknown, Place | undefined][] = [[value, undefined]];
  while (pending.length > 0) {
    const [item, place] = pending.pop() as [unknown, Place | undefined];
    if (typeof item === 'string') {
      const detail = textProblem(item);
      if (detail) return { path: pathOf(place), detail };
    } else if (Array.isArray(item)) {
      item.forEach((element, i) => pending.push([element, { parent: place, key: i }]));
    } else if (typeof item === 'object' && item !== null) {
      for (const [name, member] of Object.entries(item)) {
        const detail = textProblem(name);
        if (detail) return { path: pathOf(place, name), detail };
        pending.push([member, { parent: place, key: name }]);
      }
    }
  }
  return undefined;
}
