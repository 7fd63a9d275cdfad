export { createLogger, REDACTED_PATHS } from './logger.js';
export { createMetrics, IDENTITY_REJECTION_REASONS, serveClusterMetrics } from './metrics.js';
export type { Metrics } from './metrics.js';
export { DECISIONS, DELIVERY_OUTCOMES, quietObserver, refusalOutcome, REQUEST_OUTCOMES } from './observer.js';
export type { BrokerObserver, RequestOutcome } from './observer.js';
