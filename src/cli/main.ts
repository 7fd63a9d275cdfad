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

/**
 * Exits once stdout and stderr have written everything: a pipe takes 64 KiB at once and node
 * queues the rest, which `process.exit` would drop, cutting `jit audit issuances --all | jq`
 * short with status 0. A reader gone meanwhile ends it with 141 (above), as for any write.
 */
function exitWhenWritten(code: number): void {
  let pending = 2;
  const written = () => {
    pending -= 1;
    if (pending === 0) process.exit(code);
  };
  process.stdout.write('', written);
  process.stderr.write('', written);
}

void runCli(process.argv.slice(2), processIo()).then(exitWhenWritten);
