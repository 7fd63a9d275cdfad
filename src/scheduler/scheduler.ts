import cron, { type ScheduledTask } from 'node-cron';
import type { Logger } from 'pino';
import { cronForInterval } from '../config/index.js';
import type { Metrics } from '../observability/index.js';
import type { Job } from './jobs.js';

export interface Scheduler {
  /**
   * Starts the schedule and every job's first run, the catch-up on what happened while the broker
   * was down; resolves once that run is done. The broker need not wait for it to serve: days of
   * backlog would keep it from listening for minutes, and nothing it serves depends on the sweep
   * (every check reads a grant's end or a request's deadline, as between two ticks).
   */
  start(): Promise<void>;
  /** Runs every job once, now (after a run of it in progress). */
  runAll(): Promise<void>;
  /** Stops scheduling and waits for runs in progress, which end after the batch in hand. */
  stop(): Promise<void>;
}

export interface SchedulerOptions {
  jobs: Record<string, Job>;
  intervalMs: number;
  logger: Logger;
  metrics: Pick<Metrics, 'jobRuns' | 'jobChanges'>;
}

/**
 * node-cron runs each job on the configured interval; a tick is skipped while the previous run of
 * the same job (the start's catch-up included) is still going. A job that throws is logged and
 * counted, and simply runs again on its next tick: it never stops the broker or the other jobs.
 */
export function createScheduler(options: SchedulerOptions): Scheduler {
  const { jobs, logger, metrics } = options;
  const expression = cronForInterval(options.intervalMs);
  if (!expression) throw new Error(`scheduler interval ${options.intervalMs} ms has no cron form`);
  /** Each job's run in progress: a job never runs twice at once in one process. */
  const running = new Map<string, Promise<void>>();
  const stopping = new AbortController();
  // Every job's series exist at zero from the start, so an alert on failures has data at once.
  for (const name of Object.keys(jobs)) for (const outcome of ['ok', 'failed']) metrics.jobRuns.inc({ job: name, outcome }, 0);

  const execute = async (name: string, job: Job): Promise<void> => {
    try {
      const changes = await job(stopping.signal);
      metrics.jobRuns.inc({ job: name, outcome: 'ok' });
      if (changes > 0) {
        metrics.jobChanges.inc({ job: name }, changes);
        logger.info({ job: name, changes }, 'scheduler job changed records');
      }
    } catch (error) {
      metrics.jobRuns.inc({ job: name, outcome: 'failed' });
      logger.error({ err: error, job: name }, 'scheduler job failed; it runs again on its next tick');
    }
  };
  const track = (name: string, execution: Promise<void>): Promise<void> => {
    running.set(name, execution);
    void execution.finally(() => {
      if (running.get(name) === execution) running.delete(name);
    });
    return execution;
  };
  /** A tick: skipped while the job's last run goes on (a catch-up longer than an interval). */
  const tick = (name: string, job: Job): Promise<void> | undefined => (running.has(name) ? undefined : track(name, execute(name, job)));
  /** On demand: a run of its own, once the one in progress is done. */
  const runNow = (name: string, job: Job): Promise<void> => track(name, (running.get(name) ?? Promise.resolve()).then(() => execute(name, job)));

  // node-cron's own notices (a tick skipped while the last run goes on) are routine: debug level.
  const cronLogger = {
    info: (message: string) => logger.debug({ source: 'node-cron' }, message),
    warn: (message: string) => logger.debug({ source: 'node-cron' }, message),
    error: (message: string | Error, err?: Error) => logger.error({ source: 'node-cron', err: err ?? message }, String(message)),
    debug: (message: string | Error) => logger.debug({ source: 'node-cron' }, String(message)),
  };
  const tasks: ScheduledTask[] = Object.entries(jobs).map(([name, job]) =>
    cron.createTask(expression, () => tick(name, job), { name: `broker:${name}`, noOverlap: true, logger: cronLogger }),
  );

  const runAll = async () => {
    await Promise.all(Object.entries(jobs).map(([name, job]) => runNow(name, job)));
  };

  return {
    async start() {
      const caughtUp = runAll();
      for (const task of tasks) await task.start();
      await caughtUp;
    },
    runAll,
    async stop() {
      stopping.abort();
      for (const task of tasks) await task.destroy();
      await Promise.allSettled([...running.values()]);
    },
  };
}
