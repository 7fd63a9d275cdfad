import cron, { type ScheduledTask } from 'node-cron';
import type { Logger } from 'pino';
import { cronForInterval } from '../config/index.js';
import type { Metrics } from '../observability/index.js';
import type { Job } from './jobs.js';

export interface Scheduler {
  /** Runs every job once (catching up on what happened while the broker was down), then on schedule. */
  start(): Promise<void>;
  /** Runs every job once, now. */
  runAll(): Promise<void>;
  /** Stops scheduling and waits for runs in progress. */
  stop(): Promise<void>;
}

export interface SchedulerOptions {
  jobs: Record<string, Job>;
  intervalMs: number;
  logger: Logger;
  metrics: Pick<Metrics, 'jobRuns' | 'jobChanges'>;
}

/**
 * node-cron runs each job on the configured interval; `noOverlap` skips a tick while the
 * previous run of the same job is still going. A job that throws is logged and counted, and
 * simply runs again on its next tick: it never stops the broker or the other jobs.
 */
export function createScheduler(options: SchedulerOptions): Scheduler {
  const { jobs, logger, metrics } = options;
  const expression = cronForInterval(options.intervalMs);
  if (!expression) throw new Error(`scheduler interval ${options.intervalMs} ms has no cron form`);
  const running = new Set<Promise<void>>();
  // Every job's series exist at zero from the start, so an alert on failures has data at once.
  for (const name of Object.keys(jobs)) for (const outcome of ['ok', 'failed']) metrics.jobRuns.inc({ job: name, outcome }, 0);

  const run = (name: string, job: Job): Promise<void> => {
    const execution = (async () => {
      try {
        const changes = await job();
        metrics.jobRuns.inc({ job: name, outcome: 'ok' });
        if (changes > 0) {
          metrics.jobChanges.inc({ job: name }, changes);
          logger.info({ job: name, changes }, 'scheduler job changed records');
        }
      } catch (error) {
        metrics.jobRuns.inc({ job: name, outcome: 'failed' });
        logger.error({ err: error, job: name }, 'scheduler job failed; it runs again on its next tick');
      }
    })();
    running.add(execution);
    void execution.finally(() => running.delete(execution));
    return execution;
  };

  // node-cron's own notices (a tick skipped while the last run goes on) are routine: debug level.
  const cronLogger = {
    info: (message: string) => logger.debug({ source: 'node-cron' }, message),
    warn: (message: string) => logger.debug({ source: 'node-cron' }, message),
    error: (message: string | Error, err?: Error) => logger.error({ source: 'node-cron', err: err ?? message }, String(message)),
    debug: (message: string | Error) => logger.debug({ source: 'node-cron' }, String(message)),
  };
  const tasks: ScheduledTask[] = Object.entries(jobs).map(([name, job]) =>
    cron.createTask(expression, () => run(name, job), { name: `broker:${name}`, noOverlap: true, logger: cronLogger }),
  );

  const runAll = async () => {
    await Promise.all(Object.entries(jobs).map(([name, job]) => run(name, job)));
  };

  return {
    async start() {
      await runAll();
      for (const task of tasks) await task.start();
    },
    runAll,
    async stop() {
      for (const task of tasks) await task.destroy();
      await Promise.allSettled([...running]);
    },
  };
}
