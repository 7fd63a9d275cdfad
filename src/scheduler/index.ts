export { createJobs } from './jobs.js';
export type { Job } from './jobs.js';
export { createScheduler } from './scheduler.js';
export type { Scheduler } from './scheduler.js';
