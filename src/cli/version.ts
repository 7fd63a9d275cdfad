import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** This package's version: from the nearest package.json above this file that is jit-broker's (src/, dist/ or a bundle). */
export function version(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'jit-broker' && pkg.version) return pkg.version;
    } catch {
      // No package.json here, or not ours: look higher.
    }
    if (dirname(dir) === dir) return 'unknown';
  }
}
