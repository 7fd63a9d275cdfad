export { createLogger, REDACTED_PATHS } from './logger.js';
export { createMetrics, serveClusterMetrics } from './metrics.js';
export type { Metrics } from './metrics.js';
