import cluster from 'node:cluster';
import { AggregatorRegistry, Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Store } from '../store/index.js';

export type Metrics = ReturnType<typeof createMetrics>;

/**
 * Prometheus metrics, one registry per broker instance (tests build several). The review gauge
 * is read from the store at scrape time, so it is right across broker processes.
 */
export function createMetrics(store: Pick<Store, 'reviews'>) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'broker_process_' });

  const httpRequests = new Counter({
    name: 'broker_http_requests_total',
    help: 'HTTP requests by route and status.',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [registry],
  });
  const httpDuration = new Histogram({
    name: 'broker_http_request_duration_seconds',
    help: 'HTTP request latency by route.',
    labelNames: ['method', 'route'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  const identityRejections = new Counter({
    name: 'broker_identity_rejections_total',
    help: 'Identity tokens refused: missing, invalid, or jwks_unavailable (the issuer\'s keys could not be fetched).',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  const jobRuns = new Counter({
    name: 'broker_scheduler_job_runs_total',
    help: 'Scheduler job runs by outcome.',
    labelNames: ['job', 'outcome'] as const,
    registers: [registry],
  });
  const jobChanges = new Counter({
    name: 'broker_scheduler_changes_total',
    help: 'Records changed by scheduler jobs.',
    labelNames: ['job'] as const,
    registers: [registry],
  });
  new Gauge({
    name: 'broker_break_glass_reviews_pending',
    help: 'Break-glass grants awaiting post-review, and how many of them are overdue.',
    labelNames: ['overdue'] as const,
    registers: [registry],
    async collect() {
      const { pending, overdue } = await store.reviews.pendingCounts();
      this.set({ overdue: 'true' }, overdue);
      this.set({ overdue: 'false' }, pending - overdue);
    },
  });

  // In a worker of several (listen.workers), a scrape answers for all of them: the primary
  // gathers every worker's registry (prom-client's AggregatorRegistry).
  if (cluster.isWorker) AggregatorRegistry.setRegistries([registry]);
  const text = (): Promise<string> => (cluster.isWorker ? askPrimaryForMetrics() : registry.metrics());

  return { registry, text, httpRequests, httpDuration, identityRejections, jobRuns, jobChanges };
}

const CLUSTER_METRICS = 'jit-broker:cluster-metrics';
const CLUSTER_METRICS_TIMEOUT_MS = 5_000;
interface ClusterMetricsMessage {
  type: typeof CLUSTER_METRICS;
  id: number;
  text?: string;
  error?: string;
}
const isClusterMetrics = (message: unknown): message is ClusterMetricsMessage =>
  typeof message === 'object' && message !== null && (message as { type?: unknown }).type === CLUSTER_METRICS;

let lastRequest = 0;
let listening = false;
const awaiting = new Map<number, (message: ClusterMetricsMessage) => void>();

function askPrimaryForMetrics(): Promise<string> {
  if (!listening) {
    listening = true;
    process.on('message', (message: unknown) => {
      if (isClusterMetrics(message)) awaiting.get(message.id)?.(message);
    });
  }
  const id = (lastRequest += 1);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      awaiting.delete(id);
      reject(new Error('the primary did not answer for the cluster\'s metrics'));
    }, CLUSTER_METRICS_TIMEOUT_MS);
    awaiting.set(id, (message) => {
      clearTimeout(timer);
      awaiting.delete(id);
      if (message.text !== undefined) resolve(message.text);
      else reject(new Error(message.error ?? 'no metrics'));
    });
    process.send?.({ type: CLUSTER_METRICS, id });
  });
}

/** In the primary of several workers: answers each worker's request for every worker's metrics. */
export function serveClusterMetrics(): void {
  const aggregator = new AggregatorRegistry();
  cluster.on('message', (worker, message: unknown) => {
    if (!isClusterMetrics(message)) return;
    aggregator.clusterMetrics().then(
      (text) => worker.send({ type: CLUSTER_METRICS, id: message.id, text }),
      (error: Error) => worker.send({ type: CLUSTER_METRICS, id: message.id, error: error.message }),
    );
  });
}
