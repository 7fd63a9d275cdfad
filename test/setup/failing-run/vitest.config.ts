import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

/** A run of one failing test with the postgres project's server set up: see exit-code.test.ts. */
export default defineConfig({
  root: fileURLToPath(new URL('../../..', import.meta.url)),
  test: {
    include: ['test/setup/failing-run/fails.check.ts'],
    globalSetup: ['test/setup/postgres.ts'],
  },
});
