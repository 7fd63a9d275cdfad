import cluster, { type Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import type { Logger } from 'pino';
import { serveClusterMetrics } from '../observability/index.js';
import { appliedByAll, isReloadReport, logReload, type ReloadOrder, type ReloadOutcome } from './reload.js';
import type { HeldSignals } from './signals.js';
import { handOverConfig } from './worker-config.js';

/** How long workers get to finish in-flight requests after SIGTERM before they are killed. */
const STOP_GRACE_MS = 12_000;
/** A worker that dies sooner than this after it started counts toward a crash loop. */
const EARLY_DEATH_MS = 10_000;
/** So many early deaths in a row, and the primary gives up rather than fork forever. */
const MAX_EARLY_DEATHS = 5;
/** A worker's exit code for a start refused on the operator's account (EX_CONFIG): forking again cannot help. */
const START_REFUSED = 78;

/**
 * The primary of a broker running several worker processes (`listen.workers`): it forks them,
 * replaces one that dies, forwards SIGHUP (reload) and SIGTERM/SIGINT (stop) to them, and
 * answers their requests for cluster-wide metrics. It opens no database and serves no request:
 * each worker is a whole broker with its own connection, sharing the listening port. Every check
 * the workers make is atomic across processes by the store's own means, as it is across replicas.
 * It keeps the configuration the workers run (`configText`, the file as read at start, until a
 * reload is applied) and hands it to each worker it forks: none starts from the file as it is now.
 */
export function runPrimary(options: {
  workers: number;
  logger: Logger;
  host: string;
  about: Record<string, unknown>;
  configText: string;
  signals: HeldSignals;
}): void {
  const { workers, logger, host, about, signals } = options;
  const running = { configText: options.configText };
  let stopping = false;
  let exitCode = 0;
  let earlyDeaths = 0;
  let announced = false;
  const startedAt = new Map<number, number>();
  /** Workers that hold their signals: SIGTERM is theirs to answer. One still loading its modules dies of it, having opened nothing. */
  const holdingSignals = new Set<number>();
  /** Per worker: true once it listens (it then takes reload orders), false if it dies first. */
  const serving = new Map<number, Promise<boolean>>();

  cluster.setupPrimary({ execArgv: workerExecArgv(process.execArgv, workers, availableParallelism()) });
  const fork = () => {
    const worker = cluster.fork();
    handOverConfig(worker, () => running.configText, () => holdingSignals.add(worker.id));
    startedAt.set(worker.id, Date.now());
    serving.set(worker.id, new Promise((resolve) => {
      worker.once('listening', () => resolve(true));
      worker.once('exit', () => resolve(false));
    }));
  };

  serveClusterMetrics();

  cluster.on('listening', (_worker: Worker, address) => {
    if (announced) return;
    announced = true;
    logger.info({ url: `http://${host}:${address.port}`, ...about, workers }, 'broker listening');
  });

  cluster.on('exit', (worker, code, signal) => {
    const lived = Date.now() - (startedAt.get(worker.id) ?? 0);
    startedAt.delete(worker.id);
    serving.delete(worker.id);
    const heldSignals = holdingSignals.delete(worker.id);
    if (stopping) {
      // A worker that did not stop cleanly (its grace ran out, its store did not close) makes the
      // whole stop unclean: the operator sees the broker's exit code, not the worker's. One that
      // SIGTERM reached before it held its signals (still loading, just forked) had nothing to close.
      if (exitCode === 0 && heldSignals && (code !== 0 || signal !== null)) {
        exitCode = 1;
        logger.error({ worker: worker.id, code, signal }, 'a worker did not stop cleanly');
      }
      if (Object.keys(cluster.workers ?? {}).length === 0) {
        logger.info('stopped');
        process.exit(exitCode);
      }
      return;
    }
    if (code === START_REFUSED) {
      // The worker said why on stderr (a key that does not open the store, say): the same for every worker.
      stop('a worker refused to start', START_REFUSED);
      return;
    }
    earlyDeaths = lived < EARLY_DEATH_MS ? earlyDeaths + 1 : 0;
    if (earlyDeaths >= MAX_EARLY_DEATHS) {
      logger.fatal({ code, signal }, 'workers keep dying at start; the broker stops');
      stop('crash loop', 1);
      return;
    }
    logger.error({ worker: worker.id, code, signal }, 'a worker died; starting another');
    fork();
  });

  const stop = (reason: string, code = 0) => {
    if (stopping) return;
    stopping = true;
    exitCode = code;
    logger.info({ reason }, 'stopping: workers finish their in-flight requests');
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM');
    setTimeout(() => {
      for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGKILL');
      process.exit(exitCode || 1);
    }, STOP_GRACE_MS).unref();
    if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(exitCode);
  };

  for (let i = 0; i < workers; i += 1) fork();
  // After the forks: a reload held while the primary started reaches them once they listen, and a
  // stop held meanwhile lets each close its store (see serve in main.ts).
  let reloads: Promise<void> = Promise.resolve();
  signals.answer({
    reload: () => {
      reloads = reloads.then(() => reloadWorkers(logger, serving, running)).catch((error: unknown) => logger.error({ err: error }, 'the reload could not be sent to every worker'));
    },
    stop: (signal) => stop(signal),
  });
}

/**
 * Node's arguments for the workers: the primary's own (`npm start`'s V8 flags), and, when the
 * workers are as many as the cores or more, `--single-threaded-gc`: V8's parallel collector
 * helpers could only take the cores the other workers are busy on. Measured with bench:http on
 * two cores, two workers issued 3 to 11% more with it (five comparisons in turns); one process alone,
 * whose helpers have a core to themselves, issued 9% less, so it is not set where cores are spare.
 */
export function workerExecArgv(execArgv: readonly string[], workers: number, cores: number): string[] {
  const flag = '--single-threaded-gc';
  return workers >= cores && !execArgv.includes(flag) ? [...execArgv, flag] : [...execArgv];
}

let orders = 0;

/** Sends a worker a reload order; undefined when it dies first (its replacement starts with the configuration the others run). */
function orderReload(worker: Worker, order: Pick<ReloadOrder, 'record' | 'text'>): Promise<ReloadOutcome | undefined> {
  const id = (orders += 1);
  return new Promise((resolve) => {
    const onMessage = (message: unknown) => {
      if (!isReloadReport(message) || message.id !== id) return;
      done(message.outcome);
    };
    const done = (outcome: ReloadOutcome | undefined) => {
      worker.off('message', onMessage);
      worker.off('exit', onExit);
      resolve(outcome);
    };
    const onExit = () => done(undefined);
    worker.on('message', onMessage);
    worker.on('exit', onExit);
    worker.send({ type: 'jit:reload', id, ...order } satisfies ReloadOrder);
  });
}

/**
 * A reload of every worker, said once. One worker reads the file, records `config.loaded` and
 * applies it first (recorded before any worker judges a request by it); the others follow only
 * if it did, given the text it applied, and the line 'configuration reloaded' comes once all
 * have: from then on, every request is judged by the new file, whichever worker takes it. Once
 * recorded, it is the configuration the broker runs, and the one a worker forked from then on
 * starts with.
 */
async function reloadWorkers(logger: Logger, serving: ReadonlyMap<number, Promise<boolean>>, running: { configText: string }): Promise<void> {
  let first: { worker: Worker; outcome: ReloadOutcome } | undefined;
  for (const worker of await listeningWorkers(serving)) {
    const outcome = await orderReload(worker, { record: true });
    if (outcome === undefined) continue; // it died first: the next one reads the file
    first = { worker, outcome };
    break;
  }
  if (first === undefined) return; // no worker left to reload: the ones that start are handed the configuration they run
  const { worker: recorder, outcome: recorded } = first;
  if (recorded.status === 'refused') {
    logReload(logger, recorded);
    return;
  }
  const { text } = recorded;
  running.configText = text;
  // Asked again: a worker forked while the first one reloaded was handed the configuration before.
  const rest = (await listeningWorkers(serving)).filter((worker) => worker !== recorder);
  const outcomes = (await Promise.all(rest.map((worker) => orderReload(worker, { record: false, text })))).filter((outcome) => outcome !== undefined);
  const refused = outcomes.filter((outcome) => outcome.status === 'refused');
  if (refused.length > 0) {
    // The same text, yet a file it names (a jwksFile, a secretFile, its policyTests) changed between
    // two workers' reads. The broker runs the recorded file: a worker forked now starts with it.
    logger.error(
      { file: recorded.file, applied: outcomes.length + 1 - refused.length, refused: refused.map(({ file, problems }) => ({ file, problems })) },
      'the workers disagree on the reloaded file; send SIGHUP again once it is as intended',
    );
    return;
  }
  logReload(logger, appliedByAll(recorded, outcomes), { workers: outcomes.length + 1 });
}

/**
 * The workers running now, once each listens (it then takes reload orders). A worker still
 * starting may have been handed the configuration before the reload: it reloads too.
 */
async function listeningWorkers(serving: ReadonlyMap<number, Promise<boolean>>): Promise<Worker[]> {
  const all = Object.values(cluster.workers ?? {}).filter((worker): worker is Worker => worker !== undefined);
  const listening = await Promise.all(all.map((worker) => serving.get(worker.id) ?? false));
  return all.filter((worker, i) => listening[i] && worker.isConnected());
}
