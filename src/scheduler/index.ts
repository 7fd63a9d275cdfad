export { createJobs } from './jobs.js';
export type { Job, JobDeps } from './jobs.js';
export { createScheduler } from './scheduler.js';
export type { Scheduler, SchedulerOptions } from './scheduler.js';
