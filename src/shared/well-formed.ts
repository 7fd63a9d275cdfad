/**
 * CONTRACT sections 1 and 4: text that is not well-formed Unicode (a lone surrogate) is refused,
 * in identity tokens and in every request. A lone surrogate has no one meaning: normalising,
 * comparing, storing and hashing it differ by layer (the two store engines keep different bytes),
 * so a value holding one could be two values at once.
 */

/** ES2024's String.prototype.isWellFormed: false for a lone surrogate. Node 20 has it; the lib typings here stop at ES2023. */
export const isWellFormed = (text: string): boolean => (text as string & { isWellFormed(): boolean }).isWellFormed();

/**
 * Where the first string that is not well-formed lies in a value, names and values at any depth,
 * as the path to it (a bad member name ends the path); undefined when every string is well
 * formed. Iterative, so no nesting depth can exhaust the stack.
 */
export function malformedText(value: unknown): (string | number)[] | undefined {
  return allWellFormed(value) ? undefined : pathToMalformed(value);
}

/** The check alone, run on every body and identity token: no path is built while all is well. */
function allWellFormed(value: unknown): boolean {
  const pending: unknown[] = [value];
  while (pending.length > 0) {
    const item = pending.pop();
    if (typeof item === 'string') {
      if (!isWellFormed(item)) return false;
    } else if (Array.isArray(item)) {
      for (const element of item) pending.push(element);
    } else if (typeof item === 'object' && item !== null) {
      for (const name in item) {
        if (!Object.hasOwn(item, name)) continue;
        if (!isWellFormed(name)) return false;
        pending.push((item as Record<string, unknown>)[name]);
      }
    }
  }
  return true;
}

/** Where it lies: each pending value keeps a link to its parent's place, so no depth costs more than once. */
function pathToMalformed(value: unknown): (string | number)[] | undefined {
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
      if (!isWellFormed(item)) return pathOf(place);
    } else if (Array.isArray(item)) {
      item.forEach((element, i) => pending.push([element, { parent: place, key: i }]));
    } else if (typeof item === 'object' && item !== null) {
      for (const [name, member] of Object.entries(item)) {
        if (!isWellFormed(name)) return pathOf(place, name);
        pending.push([member, { parent: place, key: name }]);
      }
    }
  }
  return undefined;
}
