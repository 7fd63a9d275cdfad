import { execFileSync } from 'node:child_process';

/**
 * The console's browser code is served from dist/console/web: built once before the tests, so
 * the browser tests run what src/ says, not what the last build left.
 */
export default function buildConsole(): void {
  execFileSync('npm', ['run', '-s', 'build:console'], { stdio: 'inherit' });
}
