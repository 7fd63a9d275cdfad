/** What bench:http tells the person running it. */

/** Progress and warnings: always stderr, so `--json` leaves stdout to the JSON alone. */
export const say = (line: string) => process.stderr.write(`${line}\n`);

/** A failure the bench explains itself (a server that would not start or answer): shown without a stack trace. */
export class BenchError extends Error {}

/** A bad command line. */
export class UsageError extends BenchError {}
