/** Everything a command touches outside itself, so tests can run the CLI in-process. */
export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Whether stdin and stderr are a terminal: a question can be asked, progress lines redraw in place. */
  interactive: boolean;
  /** Whether stdout is a terminal: an export printed there is escaped, one redirected to a file is the broker's bytes. */
  stdoutTerminal: boolean;
  env: NodeJS.ProcessEnv;
  readStdin: () => string;
  /** Asks a yes/no question on the terminal. */
  confirm: (question: string) => Promise<boolean>;
  fetch: typeof fetch;
  sleep: (ms: number) => Promise<void>;
  /** The clock a wait runs on (`--wait`, progress lines), in ms since the epoch: `Date.now` in the process. */
  now: () => number;
}
