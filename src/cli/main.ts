#!/usr/bin/env node
import { processIo, run } from './run.js';

run(process.argv.slice(2), processIo()).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`jit: ${(error as Error).message}\n`);
    process.exit(1);
  },
);
