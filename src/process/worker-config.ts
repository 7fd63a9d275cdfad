import type { Worker } from 'node:cluster';

/**
 * The configuration a worker of several starts with: the text the other workers run (the file
 * as the primary read it at start, or as the last reload applied it), handed over by the
 * primary, never the file as it is now. The file may hold a change a reload refused: a worker
 * that read it would fail on a typo (and the primary would stop the whole broker), or start
 * with a restart-only change and serve beside workers that run another configuration.
 * Over the IPC channel, not the environment or a file: the text may hold a database password.
 */

/** Worker to primary: which configuration to start with. Asked for, not sent unasked: a message that arrives before the worker listens for it is lost. */
interface ConfigWanted {
  type: 'jit:config-wanted';
}

/** Primary to worker: the configuration file's text to start with. */
interface ConfigHandover {
  type: 'jit:config';
  text: string;
}

const isMessage = (message: unknown, type: string): boolean => typeof message === 'object' && message !== null && (message as { type?: unknown }).type === type;

/** In a worker: the configuration text the primary hands over. */
export function receiveWorkerConfig(): Promise<string> {
  return new Promise((resolve) => {
    const onMessage = (message: unknown) => {
      if (!isMessage(message, 'jit:config')) return;
      process.off('message', onMessage);
      resolve((message as ConfigHandover).text);
    };
    process.on('message', onMessage);
    process.send?.({ type: 'jit:config-wanted' } satisfies ConfigWanted);
  });
}

/**
 * In the primary: answers `worker`'s request with the configuration the broker runs when it asks.
 * `asked` hears of the request: a worker asks once it holds its signals (main.ts), before it opens anything.
 */
export function handOverConfig(worker: Worker, running: () => string, asked: () => void = () => {}): void {
  worker.on('message', (message: unknown) => {
    if (!isMessage(message, 'jit:config-wanted')) return;
    asked();
    worker.send({ type: 'jit:config', text: running() } satisfies ConfigHandover);
  });
}
