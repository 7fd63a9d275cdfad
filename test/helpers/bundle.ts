import { mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { build } from 'esbuild';

/**
 * An entry point of src/ bundled once per test process (what `npm run build` compiles, without
 * waiting for tsc): a spawned bundle starts in a third of tsx's time, and a broker of several
 * workers starts one per core. Bundles sit under the checkout's .cache/ so their packages resolve
 * from its node_modules, and the package's own files (migrations/) from its package.json (see
 * shared/package.ts). Not under node_modules/.cache: where node_modules links to another
 * checkout's (a git worktree sharing one), the bundle's real path, and so its migrations, would be
 * that checkout's.
 */

export const ROOT = resolve(import.meta.dirname, '../..');
const bundles = new Map<string, Promise<string>>();

export function bundleOf(entry: 'src/main.ts' | 'src/cli/main.ts'): Promise<string> {
  let bundle = bundles.get(entry);
  if (!bundle) {
    bundle = (async () => {
      const dir = join(ROOT, '.cache', 'jit-test-bundles', String(process.pid));
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
