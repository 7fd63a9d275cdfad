import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The shape of src/: a request flows route -> domain service -> store, so the domain folders know
 * nothing of express or of which database is underneath, and no module imports itself through
 * others (type imports included: a cycle of types is a design knot even where it costs nothing at
 * run time).
 */

const SRC = 'src';
const DOMAIN = ['approval', 'audit', 'breakglass', 'credentials', 'delegation', 'dpop', 'duties', 'identity', 'notify', 'policy', 'policy-tests', 'requests', 'scheduler', 'settings', 'tokens'];

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

/** Every module specifier a file imports or re-exports from, static or dynamic. */
function specifiers(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const found = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'";]*?from\s+'([^']+)'/g), ...text.matchAll(/import\(\s*'([^']+)'\s*\)/g)];
  return found.map((match) => match[1] as string);
}

/** What importing a file loads at once: its static imports that carry values (not `import type`), not its dynamic ones. */
function loadedWith(entry: string): { modules: string[]; packages: string[] } {
  const modules = new Set<string>();
  const packages = new Set<string>();
  const pending = [entry];
  while (pending.length > 0) {
    const file = pending.pop() as string;
    if (modules.has(file)) continue;
    modules.add(file);
    const text = readFileSync(file, 'utf8');
    for (const [, specifier] of text.matchAll(/(?:^|\n)\s*(?:import|export)\s(?!type\s)[^'";]*?from\s+'([^']+)'/g)) {
      if (!specifier) continue;
      if (specifier.startsWith('.')) pending.push(normalize(join(dirname(file), specifier)).replace(/\.js$/, '.ts'));
      else packages.add(specifier);
    }
  }
  return { modules: [...modules].map((file) => relative(SRC, file)), packages: [...packages].filter((name) => !name.startsWith('node:')).sort() };
}

const files = sourceFiles(SRC);
const graph = new Map(
  files.map((file) => [
    file,
    specifiers(file)
      .filter((specifier) => specifier.startsWith('.'))
      .map((specifier) => normalize(join(dirname(file), specifier)).replace(/\.js$/, '.ts')),
  ]),
);

/** Strongly connected components of more than one module (Tarjan). */
function cycles(): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const found: string[][] = [];
  const visit = (node: string) => {
    index.set(node, index.size);
    low.set(node, index.get(node)!);
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (!graph.has(next)) continue;
      if (!index.has(next)) {
        visit(next);
        low.set(node, Math.min(low.get(node)!, low.get(next)!));
      } else if (stack.includes(next)) low.set(node, Math.min(low.get(node)!, index.get(next)!));
    }
    if (low.get(node) === index.get(node)) {
      const component: string[] = [];
      let member: string;
      do {
        member = stack.pop()!;
        component.push(member);
      } while (member !== node);
      if (component.length > 1) found.push(component);
    }
  };
  for (const node of graph.keys()) if (!index.has(node)) visit(node);
  return found;
}

describe('the layout of src/', () => {
  it('reads the imports it checks', () => {
    expect(graph.get(join(SRC, 'main.ts'))?.length).toBeGreaterThan(0);
  });

  it('has no import cycles', () => {
    expect(cycles()).toEqual([]);
  });

  it('store/ builds on shared/ alone: no domain rule, no HTTP, no configuration', () => {
    const offending = [...graph.entries()]
      .filter(([file]) => relative(SRC, file).startsWith('store/'))
      .flatMap(([file, imports]) => imports.filter((target) => !/^(store|shared)\//.test(relative(SRC, target))).map((target) => `${file}: ${target}`));
    expect(offending).toEqual([]);
  });

  it('verifier/, which resource servers import on its own, reaches only dpop/ and shared/, and of packages only jose', () => {
    const reached = new Set<string>();
    const pending = [join(SRC, 'verifier', 'index.ts')];
    while (pending.length > 0) {
      const file = pending.pop() as string;
      if (reached.has(file)) continue;
      reached.add(file);
      pending.push(...(graph.get(file) ?? []));
    }
    const offending = [...reached].filter((file) => !/^(verifier|dpop|shared)\//.test(relative(SRC, file)));
    const packages = [...reached].flatMap((file) => specifiers(file).filter((specifier) => !specifier.startsWith('.') && !specifier.startsWith('node:')));
    expect(reached).toContain(join(SRC, 'dpop', 'verify.ts'));
    expect(offending).toEqual([]);
    expect(new Set(packages)).toEqual(new Set(['jose']));
  });

  // A pipeline step runs `jit request` once per task: every command imported up front cost each call a quarter of a second.
  it.each(['cli/main.ts', 'cli/commands/request.ts'])('%s loads no configuration schema, policy engine, database driver or JOSE library at once', (entry) => {
    const { modules, packages } = loadedWith(join(SRC, entry));
    expect(modules.filter((file) => !/^(cli|shared)\//.test(file) && file !== 'config/errors.ts')).toEqual([]);
    expect(packages.filter((name) => !['jose/jwt/decode', 'ms'].includes(name))).toEqual([]);
  });

  it.each(DOMAIN)('%s/ knows neither express nor a database engine', (folder) => {
    const offending = files
      .filter((file) => relative(SRC, file).startsWith(`${folder}/`))
      .flatMap((file) =>
        specifiers(file)
          .filter((specifier) => /^(express|better-sqlite3|pg)$/.test(specifier) || /\/store\/(sqlite|postgres)\//.test(specifier))
          .map((specifier) => `${file}: ${specifier}`),
      );
    expect(offending).toEqual([]);
  });
});
