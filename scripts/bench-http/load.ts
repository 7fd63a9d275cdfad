/**
 * Loading one server with autocannon and measuring what it cost: throughput and latency as the
 * client sees them, CPU time and peak memory as the server's own process records them.
 */
import autocannon from 'autocannon';
import { BenchError, say } from './console.js';
import { cpuSeconds, peakRssBytesByProcess, type Child } from './processes.js';

/** One request, repeated by every connection; with `vary`, each request's headers and body are its answer instead. */
export interface Target {
  name: string;
  url: string;
  method: 'POST';
  headers: Record<string, string>;
  body: string;
  vary?: () => { headers: Record<string, string>; body: string };
  /** Runs before each stretch of load on it (warm-up, run, turn), with its length: what can be made ahead is made then. */
  prepare?: (seconds: number) => void;
}

export interface LoadPlan {
  connections: number;
  warmupSeconds: number;
  seconds: number;
}

export interface Measurement {
  target: string;
  seconds: number;
  /** Every response counted by autocannon, whatever its status. */
  requests: number;
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  /** 2xx responses per second: refusals are not throughput. */
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  cpuMsPerRequest: number;
  /**
   * CPU the load generator (this process: autocannon) spent per request meanwhile. It shares the
   * machine's cores with the server: (server + load generator) x req/s is how many cores were busy.
   */
  loadCpuMsPerRequest: number;
  /** Peak RSS of all the server's processes together (a primary and its workers, replicas). */
  peakRssMB: number;
  /** Peak RSS of its largest process: what one process may hold is the memory target. */
  largestProcessRssMB: number;
  /** How many processes the server ran (the primary of several workers counts). */
  processes: number;
  /** 2xx responses in each second of the run, in order. */
  okPerSecond: number[];
  /** The response time of every 2xx response (ms), as autocannon times it: several replicas' runs merge into one distribution. */
  okLatenciesMs: number[];
  /** Of several replicas measured as one: the worst replica's p99. */
  worstP99Ms?: number;
  /** Lines the server wrote during the run (the broker logs at warn: there should be none). */
  logLines: number;
  /** What one request answered, when some failed. */
  failureSample?: string;
}

/** No token, identity or minted, ever reaches the terminal: bodies are shown with JWTs blanked. */
const redactJwts = (text: string) => text.replace(/eyJ[\w-]*\.[\w-]*\.[\w-]*/g, '<jwt>');

async function send(target: Target): Promise<{ status: number; text: string }> {
  const response = await fetch(target.url, { method: target.method, headers: target.headers, body: target.body });
  return { status: response.status, text: await response.text() };
}

/** One request before any load: a target that does not answer 2xx with a token is not worth loading. */
export async function preflight(target: Target): Promise<void> {
  const { status, text } = await send(target);
  let hasToken = false;
  try {
    hasToken = typeof (JSON.parse(text) as { access_token?: unknown }).access_token === 'string';
  } catch {
    // not JSON: reported below
  }
  if (status < 200 || status > 299 || !hasToken) {
    throw new BenchError(`${target.name} answered ${status} without an access_token: ${redactJwts(text).slice(0, 500)}`);
  }
}

/** One more request, to show what the failing ones were answered. */
async function sampleFailure(target: Target): Promise<string> {
  try {
    const { status, text } = await send(target);
    return `${status} ${redactJwts(text).slice(0, 300)}`;
  } catch (error) {
    return `no answer: ${(error as Error).message}`;
  }
}

interface LoadResult {
  result: autocannon.Result;
  okPerSecond: number[];
  okLatenciesMs: number[];
}

/** `connections` connections, each sending the target's request again as soon as it is answered, for `seconds`. */
function load(target: Target, seconds: number, connections: number): Promise<LoadResult> {
  target.prepare?.(seconds);
  // autocannon keeps only a histogram of its per-second counts; a trend needs them in order.
  const okPerSecond: number[] = Array.from({ length: seconds }, () => 0);
  const okLatenciesMs: number[] = [];
  let started = performance.now();
  return new Promise((resolveLoad, reject) => {
    // The callback form, because it returns the instance whose events give those counts.
    const instance = autocannon(
      {
        url: target.url,
        method: target.method,
        headers: target.headers,
        body: target.body,
        connections,
        duration: seconds,
        ...(target.vary ? { requests: [{ setupRequest: (request: autocannon.Request) => ({ ...request, ...target.vary?.() }) }] } : {}),
      },
      (error: unknown, result) => (error ? reject(error as Error) : resolveLoad({ result, okPerSecond, okLatenciesMs })),
    );
    instance.on('start', () => (started = performance.now()));
    instance.on('response', (_client, statusCode, _bytes, responseTime) => {
      if (statusCode < 200 || statusCode > 299) return;
      okLatenciesMs.push(responseTime);
      // A straggler answered after the last full second counts in the last one.
      const second = Math.min(seconds - 1, Math.floor((performance.now() - started) / 1000));
      okPerSecond[second] = (okPerSecond[second] ?? 0) + 1;
    });
  });
}

/**
 * Warms up (JIT, statement caches, connections), then loads the target while reading the
 * server's CPU time just before and just after, so the warm-up and start-up are not charged.
 */
export async function measure(target: Target, server: Child, plan: LoadPlan): Promise<Measurement> {
  if (plan.warmupSeconds > 0) await load(target, plan.warmupSeconds, plan.connections);
  const cpuBefore = cpuSeconds(server.pid);
  const linesBefore = server.lines;
  say(`  ${target.name}: ${plan.seconds} s at ${plan.connections} connections`);
  const loadBefore = ownCpuSeconds();
  const { result, okPerSecond, okLatenciesMs } = await load(target, plan.seconds, plan.connections);
  const loadUsed = ownCpuSeconds() - loadBefore;
  const cpuUsed = cpuSeconds(server.pid) - cpuBefore;
  const requests = result.requests.total;
  const rssMB = peakRssBytesByProcess(server.pid).map((bytes) => bytes / 1e6);
  const measurement: Measurement = {
    target: target.name,
    seconds: result.duration,
    requests,
    ok: result['2xx'],
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodes: Object.fromEntries(Object.entries(result.statusCodeStats ?? {}).map(([code, { count }]) => [code, count ?? 0])),
    reqPerSec: result['2xx'] / result.duration,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    cpuMsPerRequest: requests > 0 ? (cpuUsed * 1000) / requests : Number.NaN,
    loadCpuMsPerRequest: requests > 0 ? (loadUsed * 1000) / requests : Number.NaN,
    peakRssMB: rssMB.reduce((a, b) => a + b, 0),
    largestProcessRssMB: Math.max(...rssMB),
    processes: rssMB.length,
    okPerSecond,
    okLatenciesMs,
    logLines: server.lines - linesBefore,
  };
  if (failures(measurement) > 0) measurement.failureSample = await sampleFailure(target);
  return measurement;
}

/** A target and the server that answers it (whose CPU and memory its measurement counts). */
export interface Served {
  target: Target;
  server: Child;
}

/**
 * Several targets, on one server or on several running side by side, in turns of one second each
 * for `plan.seconds` turns apiece (after a warm-up of each): a comparison that a shared machine's
 * load, which moves from one minute to the next, affects alike. A server waits idle while another
 * is loaded. Each target's measurement adds up its turns.
 */
export async function measureInTurns(served: readonly Served[], plan: LoadPlan): Promise<Measurement[]> {
  return (await measureGroupsInTurns(served.map((one) => [one]), plan)).map((group) => group[0] as Measurement);
}

/**
 * As measureInTurns, for groups of targets loaded together in their turn, the connections split
 * between them (replicas behind one load balancer): a group of N is warmed up N times as long, so
 * that each of its servers has seen as many requests as a lone server's warm-up gives it. Each
 * target of each group has a measurement of its own.
 */
export async function measureGroupsInTurns(groups: readonly (readonly Served[])[], plan: LoadPlan): Promise<Measurement[][]> {
  const share = (i: number, parts: number) => Math.floor(plan.connections / parts) + (i < plan.connections % parts ? 1 : 0);
  const loadGroup = (group: readonly Served[], seconds: number) => Promise.all(group.map(({ target }, i) => load(target, seconds, share(i, group.length))));
  for (const group of groups) if (plan.warmupSeconds > 0) await loadGroup(group, plan.warmupSeconds * group.length);
  say(`  ${groups.map((group) => group.map((s) => s.target.name).join(' + ')).join(' / ')}: ${plan.seconds} turns of 1 s each at ${plan.connections} connections`);
  const turns = groups.map((group) => group.map(() => ({ cpu: 0, loadCpu: 0, lines: 0, results: [] as LoadResult[] })));
  for (let turn = 0; turn < plan.seconds; turn += 1) {
    for (const [g, group] of groups.entries()) {
      const sums = turns[g] as (typeof turns)[number];
      const before = group.map(({ server }) => ({ cpu: cpuSeconds(server.pid), lines: server.lines }));
      const loadBefore = ownCpuSeconds();
      const results = await loadGroup(group, 1);
      // The load generator's CPU of a turn, shared among its targets by the requests each took.
      const loadUsed = ownCpuSeconds() - loadBefore;
      const requests = results.reduce((total, { result }) => total + result.requests.total, 0);
      group.forEach(({ server }, i) => {
        const sum = sums[i] as (typeof sums)[number];
        const result = results[i] as LoadResult;
        sum.results.push(result);
        sum.cpu += cpuSeconds(server.pid) - (before[i]?.cpu ?? 0);
        sum.loadCpu += requests > 0 ? (loadUsed * result.result.requests.total) / requests : 0;
        sum.lines += server.lines - (before[i]?.lines ?? 0);
      });
    }
  }
  return Promise.all(groups.map((group, g) => Promise.all(group.map(({ target, server }, i) => summed(target, server, (turns[g] as (typeof turns)[number])[i] as Turns)))));
}

interface Turns {
  cpu: number;
  loadCpu: number;
  lines: number;
  results: LoadResult[];
}

/** One target's turns added up. */
async function summed(target: Target, server: Child, { cpu, loadCpu, lines, results }: Turns): Promise<Measurement> {
  const rssMB = peakRssBytesByProcess(server.pid).map((bytes) => bytes / 1e6);
  const add = (pick: (r: autocannon.Result) => number) => results.reduce((total, { result }) => total + pick(result), 0);
  const requests = add((r) => r.requests.total);
  const seconds = add((r) => r.duration);
  const okLatenciesMs = results.flatMap((r) => r.okLatenciesMs);
  const statusCodes: Record<string, number> = {};
  for (const { result } of results) {
    for (const [code, { count }] of Object.entries(result.statusCodeStats ?? {})) statusCodes[code] = (statusCodes[code] ?? 0) + (count ?? 0);
  }
  const measurement: Measurement = {
    target: target.name,
    seconds,
    requests,
    ok: add((r) => r['2xx']),
    non2xx: add((r) => r.non2xx),
    errors: add((r) => r.errors),
    timeouts: add((r) => r.timeouts),
    statusCodes,
    reqPerSec: add((r) => r['2xx']) / seconds,
    p50Ms: percentile(okLatenciesMs, 50),
    p99Ms: percentile(okLatenciesMs, 99),
    cpuMsPerRequest: requests > 0 ? (cpu * 1000) / requests : Number.NaN,
    loadCpuMsPerRequest: requests > 0 ? (loadCpu * 1000) / requests : Number.NaN,
    peakRssMB: rssMB.reduce((a, b) => a + b, 0),
    largestProcessRssMB: Math.max(...rssMB),
    processes: rssMB.length,
    okPerSecond: results.flatMap((r) => r.okPerSecond),
    okLatenciesMs,
    logLines: lines,
  };
  if (failures(measurement) > 0) measurement.failureSample = await sampleFailure(target);
  return measurement;
}

export const failures = (m: Measurement) => m.non2xx + m.errors;

/** CPU seconds this process (the load generator) has used so far, all its threads. */
function ownCpuSeconds(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
}

/** The `p`th percentile (0-100) of `values`, as the nearest rank; rounded to whole ms as autocannon reports them. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return Math.round(sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number);
}

/** More failures than successes: the figures then describe refusals, not issuance. */
export const mostlyFailed = (m: Measurement) => m.ok === 0 || failures(m) > m.ok;
