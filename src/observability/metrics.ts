import cluster from 'node:cluster';
import { AggregatorRegistry, Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ConflictKind, Store } from '../store/index.js';
import { DECISIONS, DELIVERY_OUTCOMES, REQUEST_OUTCOMES, type BrokerObserver } from './observer.js';

export type Metrics = ReturnType<typeof createMetrics>;

/** The kinds `broker_store_conflicts_total` tells apart. */
const STORE_CONFLICTS: readonly ConflictKind[] = ['deadlock', 'serialization_failure'];

/** The reasons `broker_identity_rejections_total` tells apart (see http/auth.ts for why so few). */
export const IDENTITY_REJECTION_REASONS = ['missing', 'invalid', 'jwks_unavailable'] as const;

/**
 * Prometheus metrics: the broker's own in a registry per broker instance (tests build several),
 * the process's shared by every instance in the process. Names follow the Prometheus
 * conventions: the process and Node.js metrics exactly as prom-client names them
 * (`process_cpu_seconds_total`, `nodejs_heap_size_used_bytes`), so the standard Node.js
 * dashboards work; the broker's own under `broker_`, counters ending in `_total`. Every series
 * of a bounded label set exists from the start at zero, so a rate() or an alert on it has data
 * before the first event. The review gauge is read from the store at scrape time, so it is right
 * across broker processes.
 */
export function createMetrics(store: Pick<Store, 'reviews'>) {
  const own = new Registry();

  const httpRequests = new Counter({
    name: 'broker_http_requests_total',
    help: 'HTTP requests by method, route (the OpenAPI path template, or "unmatched") and status.',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [own],
  });
  const httpDuration = new Histogram({
    name: 'broker_http_request_duration_seconds',
    help: 'HTTP request latency by method and route.',
    labelNames: ['method', 'route'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [own],
  });
  const identityRejections = new Counter({
    name: 'broker_identity_rejections_total',
    help: 'Identity tokens refused: missing, invalid, or jwks_unavailable (the issuer\'s keys could not be fetched).',
    labelNames: ['reason'] as const,
    registers: [own],
  });
  for (const reason of IDENTITY_REJECTION_REASONS) identityRejections.inc({ reason }, 0);

  const requests = new Counter({
    name: 'broker_requests_total',
    help: 'Credential requests by outcome: issued, pending_approval, or the problem type of the refusal.',
    labelNames: ['outcome'] as const,
    registers: [own],
  });
  for (const outcome of REQUEST_OUTCOMES) requests.inc({ outcome }, 0);

  const issuances = new Counter({
    name: 'broker_issuances_total',
    help: 'Access tokens minted and recorded, by whether they were break-glass and whether approvers approved them.',
    labelNames: ['break_glass', 'approved'] as const,
    registers: [own],
  });
  // The three kinds a grant can be: break-glass is issued at once, never approved.
  for (const [breakGlass, approved] of [['false', 'false'], ['false', 'true'], ['true', 'false']] as const) {
    issuances.inc({ break_glass: breakGlass, approved }, 0);
  }

  const approvals = new Counter({
    name: 'broker_approvals_total',
    help: 'Approvers\' decisions recorded, by decision.',
    labelNames: ['decision'] as const,
    registers: [own],
  });
  for (const decision of DECISIONS) approvals.inc({ decision }, 0);

  const webhookDeliveries = new Counter({
    name: 'broker_webhook_deliveries_total',
    help: 'Webhook deliveries by outcome: delivered, or failed after every retry.',
    labelNames: ['outcome'] as const,
    registers: [own],
  });
  for (const outcome of DELIVERY_OUTCOMES) webhookDeliveries.inc({ outcome }, 0);

  const jobRuns = new Counter({
    name: 'broker_scheduler_job_runs_total',
    help: 'Scheduler job runs by outcome.',
    labelNames: ['job', 'outcome'] as const,
    registers: [own],
  });
  const jobChanges = new Counter({
    name: 'broker_scheduler_changes_total',
    help: 'Records changed by scheduler jobs.',
    labelNames: ['job'] as const,
    registers: [own],
  });
  const reloads = new Counter({
    name: 'broker_config_reloads_total',
    help: 'Configuration reloads (SIGHUP) by outcome: applied, or refused (the running configuration stays).',
    labelNames: ['outcome'] as const,
    registers: [own],
  });
  for (const outcome of ['applied', 'refused'] as const) reloads.inc({ outcome }, 0);

  const storeConflicts = new Counter({
    name: 'broker_store_conflicts_total',
    help: 'Deadlocks and serialization failures PostgreSQL reported between transactions (replicas): each rolled back one transaction, which the store ran again or, past its tries, answered with 503.',
    labelNames: ['kind'] as const,
    registers: [own],
  });
  const storeRetries = new Counter({
    name: 'broker_store_retries_total',
    help: 'Transactions the store ran again after a deadlock or a serialization failure.',
    registers: [own],
  });
  for (const kind of STORE_CONFLICTS) storeConflicts.inc({ kind }, 0);
  storeRetries.inc(0);
  /** What the store reports of its conflicts (it never sees Prometheus). */
  const storeConflict = (kind: ConflictKind, retried: boolean) => {
    storeConflicts.inc({ kind });
    if (retried) storeRetries.inc();
  };

  new Gauge({
    name: 'broker_break_glass_reviews_pending',
    help: 'Break-glass grants awaiting post-review, and how many of them are overdue.',
    labelNames: ['overdue'] as const,
    registers: [own],
    async collect() {
      const { pending, overdue } = await store.reviews.pendingCounts();
      this.set({ overdue: 'true' }, overdue);
      this.set({ overdue: 'false' }, pending - overdue);
    },
  });

  const observer: BrokerObserver = {
    credentialRequested: (outcome) => requests.inc({ outcome }),
    tokenIssued: ({ breakGlass, approved }) => issuances.inc({ break_glass: String(breakGlass), approved: String(approved) }),
    decisionRecorded: (decision) => approvals.inc({ decision }),
    webhookDelivered: (outcome) => webhookDeliveries.inc({ outcome }),
  };


  const registry = Registry.merge([processMetrics(), own]);

  // In a worker of several (listen.workers), a scrape answers for all of them: the primary
  // gathers every worker's registry (prom-client's AggregatorRegistry).
  if (cluster.isWorker) {
    // prom-client installs a worker's answering listener when an AggregatorRegistry is made.
    new AggregatorRegistry();
    AggregatorRegistry.setRegistries([registry]);
  }
  const text = (): Promise<string> => (cluster.isWorker ? askPrimaryForMetrics() : registry.metrics());

  return { registry, text, httpRequests, httpDuration, identityRejections, jobRuns, jobChanges, reloads, observer, storeConflict };
}

let processRegistry: Registry | undefined;

/**
 * The process's and Node.js's metrics, collected once per process however many brokers it runs
 * (tests build hundreds): each collection enables an event-loop delay monitor that is never
 * disabled, which wakes the process every 10 ms.
 */
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
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
