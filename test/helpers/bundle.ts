import { mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { build } from 'esbuild';

/**
 * An entry point of src/ bundled once per test process (what `npm run build` compiles, without
 * waiting for tsc): a spawned bundle starts in a third of tsx's time, and a broker of several
 * workers starts one per core. Bundles sit under node_modules/.cache so their packages resolve
 * from the repository (and the package's own files from its package.json: see shared/package.ts).
 */

export const ROOT = resolve(import.meta.dirname, '../..');
const bundles = new Map<string, Promise<string>>();

export function bundleOf(entry: 'src/main.ts' | 'src/cli/main.ts'): Promise<string> {
  let bundle = bundles.get(entry);
  if (!bundle) {
    bundle = (async () => {
      const dir = join(ROOT, 'node_modules', '.cache', 'jit-test-bundles', String(process.pid));
      mkdirSync(dir, { recursive: true });
      process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
      const outfile = join(dir, entry === 'src/main.ts' ? 'broker.mjs' : 'jit.mjs');
      await build({ entryPoints: [join(ROOT, entry)], bundle: true, platform: 'node', format: 'esm', target: 'node20', packages: 'external', outfile, logLevel: 'error' });
      return outfile;
    })();
    bundles.set(entry, bundle);
  }
  return bundle;
}

/** The broker, `npm start`'s dist/main.js built from src/ as it is now. */
export const brokerBundle = () => bundleOf('src/main.ts');
/** The `jit` CLI. */
export const jitBundle = () => bundleOf('src/cli/main.ts');
