export { createLogger } from './logger.js';
export { createMetrics, serveClusterMetrics } from './metrics.js';
export type { Metrics } from './metrics.js';
export { DECISIONS, DELIVERY_OUTCOMES, quietObserver, refusalOutcome, REQUEST_OUTCOMES } from './observer.js';
export type { BrokerObserver, RequestOutcome } from './observer.js';
