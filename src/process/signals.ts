/** What a broker process does on SIGHUP (reload) and on SIGTERM or SIGINT (stop). */
export interface SignalAnswers {
  reload(): void;
  stop(signal: NodeJS.Signals): void;
}

/** The process's signals, held from its first moment until the broker can answer them. */
export interface HeldSignals {
  /**
   * The stop asked for so far (SIGTERM or SIGINT), if any: a start that sees one goes no further.
   * A signal reaches JavaScript on a later turn of the event loop than it reaches the process: one
   * sent while the start ran without yielding (reading a file) may be seen only by `answer`.
   */
  stopAsked(): NodeJS.Signals | undefined;
  /** Answers every signal from now on, and those held: a stop, else one reload however many were sent. */
  answer(answers: SignalAnswers): void;
}

/**
 * Catches SIGHUP, SIGTERM and SIGINT at once, before the broker starts. Node's default for each
 * is to end the process where it stands: a reload or a stop sent while the broker started (by a
 * deploy script, an orchestrator, a signal to the process group) killed it with the database
 * half set up and no word in the log. Caught early, each waits for the broker to be able to
 * answer it.
 */
export function holdSignals(): HeldSignals {
  let answers: SignalAnswers | undefined;
  let stop: NodeJS.Signals | undefined;
  let reload = false;
  const onStop = (signal: NodeJS.Signals) => {
    if (answers) answers.stop(signal);
    else stop ??= signal;
  };
  process.on('SIGHUP', () => {
    if (answers) answers.reload();
    else reload = true;
  });
  process.on('SIGTERM', onStop);
  process.on('SIGINT', onStop);
  return {
    stopAsked: () => stop,
    answer(given) {
      answers = given;
      if (stop) given.stop(stop);
      else if (reload) given.reload();
    },
  };
}
