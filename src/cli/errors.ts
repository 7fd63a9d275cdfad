/**
 * The exit codes a script can switch on. 75 and 69 are the sysexits.h codes that mean "try again
 * later" (EX_TEMPFAIL) and "a service is unavailable" (EX_UNAVAILABLE).
 */
export const EXIT = {
  ok: 0,
  /** Anything else: an unknown request, a conflict, a request that expired or was revoked. */
  failed: 1,
  /** Bad arguments, or a missing setting (no broker, no identity). */
  usage: 2,
  /** Refused: by policy (`policy_denied`, `separation_of_duties`, a spent limit) or by an approver. */
  refused: 3,
  /** The broker did not accept the identity token (and it has not expired). */
  identityRejected: 4,
  /** The identity token has expired: get a fresh one and run again. */
  identityExpired: 5,
  /** The broker (or the CI system's token endpoint) cannot be reached, answers 502/503/504, or its answer stops midway. */
  unreachable: 69,
  /** The request awaits approval: collect it later with `jit collect`. */
  pending: 75,
  /** stdout's reader stopped reading (`| head`): 128 + SIGPIPE, as the shell reports any program a pipe's reader left. */
  readerGone: 141,
} as const;

export const EXIT_CODES_HELP = `Exit codes:
  0   done
  1   failed (unknown request, conflict, a request that expired or was revoked, ...)
  2   usage: bad arguments, or no broker or identity configured
  3   refused: by policy (policy_denied, separation_of_duties, a spent limit) or by an approver
  4   identity not accepted by the broker
  5   identity expired: get a fresh one and run again
  69  broker unreachable (or the CI system's token endpoint)
  75  pending approval: collect it later with jit collect
  141 the reader of stdout stopped reading (| head), as SIGPIPE ends any program`;

/** A failure the user can act on: printed as one line, never a stack trace. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT.failed,
  ) {
    super(message);
  }
}

export const usage = (message: string) => new CliError(message, EXIT.usage);

/** A JWT's (or JWE's) shape: base64url parts, the first a JSON header (`{"` is `eyJ`). */
const TOKEN_SHAPE = /^eyJ[\w-]*(?:\.[\w-]*){2,4}$/;
/** Longer than the paths and names a person gives, as long as a token. */
const LONGEST_SHOWN = 200;

/**
 * A path or variable name as a message names it. A token given in its place (an easy slip:
 * `--actor-token "$TOKEN"`) is not echoed, since a token is never printed or put in a message.
 */
export function argumentInMessage(argument: string): string {
  const text = argument.trim();
  if (TOKEN_SHAPE.test(text)) return '<not shown: it looks like a token>';
  if (text.length > LONGEST_SHOWN) return `<not shown: ${text.length} characters, as long as a token>`;
  return argument;
}
