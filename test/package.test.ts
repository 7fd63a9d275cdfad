import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

/** `npm start`, the `jit` bin and the exported verifier point at what the build produces from src/. */
describe('package.json entry points', () => {
  const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as {
    scripts: Record<string, string>;
    bin: Record<string, string>;
    exports: Record<string, { default: string; types: string }>;
  };
  // tsconfig.build.json compiles src/X.ts to dist/X.js.
  const source = (built: string) => built.replace(/^\.?\/?dist\//, 'src/').replace(/\.js$/, '.ts').replace(/\.d\.ts$/, '.ts');

  it.each([
    ['npm start', pkg.scripts.start?.split(' ').at(-1) as string],
    ['npm run jit', pkg.scripts.jit?.replace(/^node /, '') as string],
    ['the jit bin', pkg.bin.jit as string],
    ['the verifier export', pkg.exports['./verifier']?.default as string],
    ['the verifier types', pkg.exports['./verifier']?.types as string],
  ])('%s is built from an existing source file', (_name, built) => {
    expect(built).toMatch(/^\.?\/?dist\//);
    expect(existsSync(source(built))).toBe(true);
  });

  // V8 drops or renames tuning flags between releases, and node refuses to start on one it does not know.
  it('npm start passes node only flags this node accepts', () => {
    const [node, ...words] = (pkg.scripts.start as string).split(' ');
    const flags = words.filter((word) => word.startsWith('--'));
    expect(node).toBe('node');
    expect(flags.length).toBeGreaterThan(0);
    const run = spawnSync(process.execPath, [...flags, '-e', ''], { encoding: 'utf8' });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
  });
});
