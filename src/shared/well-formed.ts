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
  const pending: [unknown, (string | number)[]][] = [[value, []]];
  while (pending.length > 0) {
    const [item, path] = pending.pop() as [unknown, (string | number)[]];
    if (typeof item === 'string') {
      if (!isWellFormed(item)) return path;
    } else if (Array.isArray(item)) {
      item.forEach((element, i) => pending.push([element, [...path, i]]));
    } else if (typeof item === 'object' && item !== null) {
      for (const [name, member] of Object.entries(item)) {
        if (!isWellFormed(name)) return [...path, name];
        pending.push([member, [...path, name]]);
      }
    }
  }
  return undefined;
}
