import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import { serveClusterMetrics } from '../observability/index.js';

/** How long workers get to finish in-flight requests after SIGTERM before they are killed. */
const STOP_GRACE_MS = 12_000;
/** A worker that dies sooner than this after it started counts toward a crash loop. */
const EARLY_DEATH_MS = 10_000;
/** So many early deaths in a row, and the primary gives up rather than fork forever. */
const MAX_EARLY_DEATHS = 5;

/**
 * The primary of a broker running several worker processes (`listen.workers`): it forks them,
 * replaces one that dies, forwards SIGHUP (reload) and SIGTERM/SIGINT (stop) to them, and
 * answers their requests for cluster-wide metrics. It opens no database and serves no request:
 * each worker is a whole broker with its own connection, sharing the listening port. Every check
 * the workers make is atomic across processes by the store's own means, as it is across replicas.
 */
export function runPrimary(options: { workers: number; logger: Logger; host: string }): void {
  const { workers, logger, host } = options;
  let stopping = false;
  let earlyDeaths = 0;
  let announced = false;
  const startedAt = new Map<number, number>();

  const fork = () => {
    const worker = cluster.fork();
    startedAt.set(worker.id, Date.now());
  };

  serveClusterMetrics();

  cluster.on('listening', (_worker: Worker, address) => {
    if (announced) return;
    announced = true;
    logger.info({ url: `http://${host}:${address.port}`, workers }, 'broker listening');
  });

  cluster.on('exit', (worker, code, signal) => {
    const lived = Date.now() - (startedAt.get(worker.id) ?? 0);
    startedAt.delete(worker.id);
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) {
        logger.info('stopped');
        process.exit(0);
      }
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

  const stop = (reason: string, exitCode = 0) => {
    if (stopping) return;
    stopping = true;
    logger.info({ reason }, 'stopping: workers finish their in-flight requests');
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGTERM');
    setTimeout(() => {
      for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGKILL');
      process.exit(exitCode || 1);
    }, STOP_GRACE_MS).unref();
    if (Object.keys(cluster.workers ?? {}).length === 0) process.exit(exitCode);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGHUP', () => {
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGHUP');
  });

  for (let i = 0; i < workers; i += 1) fork();
}
