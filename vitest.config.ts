import { defineConfig } from 'vitest/config';

/** Test files that exercise the store: they run once per engine. */
const STORE_SUITES = [
  'test/approval/**/*.test.ts',
  'test/audit/**/*.test.ts',
  'test/breakglass/**/*.test.ts',
  'test/credentials/**/*.test.ts',
  'test/delegation/**/*.test.ts',
  'test/http/hostile-input.test.ts',
  'test/duties/**/*.test.ts',
  'test/notify/**/*.test.ts',
  'test/oauth/**/*.test.ts',
  'test/people/**/*.test.ts',
  'test/scheduler/**/*.test.ts',
  'test/store/**/*.test.ts',
  'test/tokens/**/*.test.ts',
  'test/verifier/**/*.test.ts',
];

export default defineConfig({
  test: {
    pool: 'forks',
    // Files of one worker share its loaded modules: importing express, jose, zod and the broker
    // again for each of ~120 files was a third of the suite's time. A test file owns no module
    // state: what it makes (brokers, stores, servers, temp dirs) it closes or removes itself.
    isolate: false,
    // Most tests wait on I/O (brokers, PostgreSQL, child processes): more files at once than cores.
    maxWorkers: 3,
    testTimeout: 20_000,
    hookTimeout: 30_000,
    setupFiles: ['test/setup/temp-dirs.ts'],
    projects: [
      {
        extends: true,
        test: {
          name: 'sqlite',
          include: ['test/**/*.test.ts'],
          env: { BROKER_TEST_ENGINE: 'sqlite' },
          globalSetup: ['test/setup/console.ts'],
        },
      },
      {
        extends: true,
        test: {
          name: 'postgres',
          include: STORE_SUITES,
          env: { BROKER_TEST_ENGINE: 'postgres' },
          globalSetup: ['test/setup/postgres.ts'],
        },
      },
    ],
  },
});
