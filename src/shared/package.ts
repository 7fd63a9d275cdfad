import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

interface Found {
  root: string;
  version: string;
}
let found: Found | null | undefined;

/**
 * The nearest folder above this module holding jit-broker's package.json: the repository or the
 * installed package, whether this runs from src/, from dist/ or from a bundle, at any depth.
 */
function find(): Found | null {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'jit-broker') return { root: dir, version: pkg.version ?? 'unknown' };
    } catch {
      // No package.json here, or not ours: look higher.
    }
    if (dirname(dir) === dir) return null;
  }
}

/** Where the package's own files are (`migrations/`, `dist/console/web/`). */
export function packageRoot(): string {
  found ??= find();
  if (!found) throw new Error(`jit-broker: no package.json of jit-broker above ${fileURLToPath(import.meta.url)}`);
  return found.root;
}

/** This build's version, or `unknown` where no package.json says it. */
export function packageVersion(): string {
  found ??= find();
  return found?.version ?? 'unknown';
}
