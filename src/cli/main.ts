#!/usr/bin/env node
import { EXIT } from './errors.js';
import { processIo, runCli } from './run.js';

// A reader that stops reading (`jit audit events --format ndjson | head`) ends a Unix program by
// SIGPIPE, silently, which the shell reports as 128 + 13. Node ignores SIGPIPE, so the next write
// fails with EPIPE instead, which unhandled ended jit with a stack trace: end as SIGPIPE would.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(EXIT.readerGone);
    throw error;
  });
}

void runCli(process.argv.slice(2), processIo()).then((code) => process.exit(code));
