/** What the figures mean: ratios, the long run's trend, the targets, and how they are printed. */
import { say } from './console.js';
import { failures, mostlyFailed, type Measurement } from './load.js';
import type { HotFunction, ProfileArea } from './profile.js';

/** Throughput against the peer's, and latency, that a start of the broker must meet. */
export interface Limits {
  minRatio: number;
  maxP99Ms: number;
}

/** What the broker must meet (issue 29); shown, never fatal (the bench measures, others fix). */
export const TARGETS = {
  defaultStart: { minRatio: 0.5, maxP99Ms: 25 } satisfies Limits,
  oneWorker: { minRatio: 0.3, maxP99Ms: 40 } satisfies Limits,
  minLateOverEarly: 0.9,
  /** Per process: a broker of several workers may hold this much in each. */
  maxProcessRssMB: 200,
  /** Issuance with a DPoP proof against issuance without (issue 26). */
  maxDpopCost: 1.3,
};
/** Replicas on PostgreSQL (issue 28): more replicas never slower, no failure, no deadlock, p99 under this. */
export const REPLICA_TARGETS = { maxP99Ms: 100 };

/** The early and the late window of the long run, in seconds. */
export const LONG_WINDOW_S = 10;

export interface LongRun {
  measurement: Measurement;
  earlyReqPerSec: number;
  lateReqPerSec: number;
  lateOverEarly: number;
}

export interface Report {
  node: string;
  platform: string;
  /** Cores available to the broker: what `workers: auto` follows. */
  cores: number;
  connections: number;
  durationSeconds: number;
  warmupSeconds: number;
  /** The peer first, then the broker's endpoints. */
  runs: Measurement[];
  ratios: { target: string; brokerOverPeer: number }[];
  long?: LongRun;
  targets: { what: string; measured: string; met: boolean | null }[];
  /** With --profile: where a profiled run's time went, by area (when known) and by function. */
  profiles?: { target: string; areas?: ProfileArea[]; hottest: HotFunction[] }[];
  /** Distinct identities the requests took in turn. */
  identities: number;
  /** With --baseline: this build's runs beside the baseline build's (SQLite in turns, PostgreSQL one after the other). */
  baseline?: {
    target: string;
    baselineReqPerSec: number;
    reqPerSec: number;
    baselineP99Ms: number;
    p99Ms: number;
    baselineCpuMsPerRequest: number;
    cpuMsPerRequest: number;
    baselineLargestRssMB: number;
    largestRssMB: number;
  }[];
  /** With --postgres: how fast the replicas' one audit chain grew, and what PostgreSQL logged meanwhile. */
  chain?: { target: string; eventsPerSecond: number; deadlocks: number; errors: number; postgresCpuMsPerRequest?: number }[];
}

/** Throughput of the first and the last LONG_WINDOW_S seconds: a cost that grows with history shows as late < early. */
export function earlyAndLate(measurement: Measurement): LongRun {
  const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
  const early = mean(measurement.okPerSecond.slice(0, LONG_WINDOW_S));
  const late = mean(measurement.okPerSecond.slice(-LONG_WINDOW_S));
  return { measurement, earlyReqPerSec: early, lateReqPerSec: late, lateOverEarly: late / early };
}

/**
 * A start's run against its limits. Its throughput is judged against the peer's in turns at the
 * same moments (`versus`) where that was measured: runs of their own, minutes apart, compare the
 * machine's load as much as the servers (the peer's own throughput moves by half between them).
 */
export interface LimitedRun {
  run: Measurement;
  limits: Limits;
  versus?: { broker: Measurement; peer: Measurement };
}

export function targetChecks(brokerRuns: LimitedRun[], peer: Measurement, long: LongRun | undefined): Report['targets'] {
  const checks: Report['targets'] = [];
  for (const { run, limits, versus } of brokerRuns) {
    const ratio = versus ? versus.broker.reqPerSec / versus.peer.reqPerSec : run.reqPerSec / peer.reqPerSec;
    const how = versus ? ' (in turns with the peer)' : '';
    checks.push({ what: `${run.target}: broker/peer${how} >= ${limits.minRatio}`, measured: ratio.toFixed(2), met: ratio >= limits.minRatio });
    // With the connections kept busy, the mean is connections / throughput (Little's law): a p99
    // target below the mean asks for throughput, not for a shorter tail.
    const mean = run.okLatenciesMs.reduce((sum, ms) => sum + ms, 0) / Math.max(1, run.okLatenciesMs.length);
    checks.push({ what: `${run.target}: p99 <= ${limits.maxP99Ms} ms`, measured: `${run.p99Ms} ms (mean ${mean.toFixed(0)} ms)`, met: run.p99Ms <= limits.maxP99Ms });
    checks.push({ what: `${run.target}: no failed request`, measured: String(failures(run)), met: failures(run) === 0 });
  }
  const memoryRuns = [...brokerRuns.map(({ run }) => ({ run, label: run.target })), ...(long ? [{ run: long.measurement, label: `${long.measurement.target} (long)` }] : [])];
  for (const { run, label } of memoryRuns) {
    checks.push({
      what: `${label}: peak RSS <= ${TARGETS.maxProcessRssMB} MB per process`,
      measured: `${run.largestProcessRssMB.toFixed(0)} MB`,
      met: run.largestProcessRssMB <= TARGETS.maxProcessRssMB,
    });
  }
  const trend = `late/early >= ${TARGETS.minLateOverEarly}`;
  checks.push(
    long
      ? { what: trend, measured: long.lateOverEarly.toFixed(2), met: long.lateOverEarly >= TARGETS.minLateOverEarly }
      : { what: trend, measured: 'not measured (run with --long)', met: null },
  );
  return checks;
}

/** What a DPoP proof adds to an issuance, on the same start: CPU per token, and throughput lost. */
export function dpopChecks(plain: Measurement, dpop: Measurement): Report['targets'] {
  const cpu = dpop.cpuMsPerRequest / plain.cpuMsPerRequest;
  const throughput = plain.reqPerSec / dpop.reqPerSec;
  return [
    { what: `DPoP: CPU per token, with a proof / without <= ${TARGETS.maxDpopCost}`, measured: cpu.toFixed(2), met: cpu <= TARGETS.maxDpopCost },
    { what: `DPoP: tokens per second, without a proof / with <= ${TARGETS.maxDpopCost}`, measured: throughput.toFixed(2), met: throughput <= TARGETS.maxDpopCost },
  ];
}

/**
 * Replica runs, in the order run: each without failures or deadlocks, p99 bounded, and none slower
 * than the one before it, judged in turns (the same replica counts side by side, `inTurns`, in the
 * same order) where they were measured so.
 */
export function replicaChecks(runs: readonly { measurement: Measurement; server: { deadlocks: number } }[], inTurns?: readonly Measurement[]): Report['targets'] {
  const checks: Report['targets'] = [];
  runs.forEach(({ measurement: run, server }, i) => {
    checks.push({ what: `${run.target}: no failed request`, measured: String(failures(run)), met: failures(run) === 0 });
    checks.push({ what: `${run.target}: no deadlock in PostgreSQL's log`, measured: String(server.deadlocks), met: server.deadlocks === 0 });
    checks.push({ what: `${run.target}: p99 < ${REPLICA_TARGETS.maxP99Ms} ms`, measured: `${run.p99Ms} ms`, met: run.p99Ms < REPLICA_TARGETS.maxP99Ms });
    const [previous, current] = inTurns ? [inTurns[i - 1], inTurns[i]] : [runs[i - 1]?.measurement, run];
    if (previous && current) {
      const ratio = current.reqPerSec / previous.reqPerSec;
      checks.push({ what: `${current.target}: at least as fast as ${inTurns ? '' : 'the run before, '}${previous.target}`, measured: ratio.toFixed(2), met: ratio >= 1 });
    }
  });
  for (const run of inTurns ?? []) checks.push({ what: `${run.target}: no failed request`, measured: String(failures(run)), met: failures(run) === 0 });
  return checks;
}

const fixed = (value: number, digits: number) => (Number.isFinite(value) ? value.toFixed(digits) : 'n/a');

/**
 * Cores the server and the load generator kept busy together (CPU per request x requests per
 * second): near the machine's count, the run was bound by CPU, and only less CPU per request
 * raises its throughput. PostgreSQL's own share is in the chain table.
 */
const coresBusy = (run: Measurement) => ((run.cpuMsPerRequest + run.loadCpuMsPerRequest) * (run.requests / run.seconds)) / 1000;

/** Markdown tables on stdout, as the other bench scripts print (the README's figures come from them). */
export function printMarkdown(report: Report): void {
  const out = (line = '') => process.stdout.write(`${line}\n`);
  const identities = report.identities > 1 ? `; ${report.identities} identities in turn` : '';
  out(`\nnode ${report.node}, ${report.platform}, ${report.cores} cores; ${report.connections} connections, ${report.durationSeconds} s each after ${report.warmupSeconds} s of warm-up${identities}\n`);
  out(
    '| target | req/s | p50 | p99 | CPU per request | load generator CPU per request | cores busy, server and load generator | peak RSS, largest process | peak RSS, all processes | non-2xx / errors | broker/peer |',
  );
  out('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const run of report.runs) {
    const ratio = report.ratios.find((r) => r.target === run.target)?.brokerOverPeer;
    const all = run.processes > 1 ? `${fixed(run.peakRssMB, 0)} MB (${run.processes})` : '';
    out(
      `| ${run.target} | ${fixed(run.reqPerSec, 0)} | ${run.p50Ms} ms | ${run.p99Ms} ms${run.worstP99Ms === undefined ? '' : ` (worst replica ${run.worstP99Ms} ms)`} | ${fixed(run.cpuMsPerRequest, 2)} ms | ${fixed(run.loadCpuMsPerRequest, 2)} ms | ${fixed(coresBusy(run), 2)} | ${fixed(run.largestProcessRssMB, 0)} MB | ${all} | ${run.non2xx} / ${run.errors} | ${ratio === undefined ? '' : ratio.toFixed(2)} |`,
    );
  }
  if (report.long) {
    const { measurement: m, earlyReqPerSec, lateReqPerSec, lateOverEarly } = report.long;
    out(`\nLong run, one identity, ${m.target}, ${m.seconds} s (${m.ok} tokens; p99 ${m.p99Ms} ms; peak RSS ${fixed(m.peakRssMB, 0)} MB):\n`);
    out(`| first ${LONG_WINDOW_S} s | last ${LONG_WINDOW_S} s | late/early |`);
    out('| --- | --- | --- |');
    out(`| ${fixed(earlyReqPerSec, 0)} req/s | ${fixed(lateReqPerSec, 0)} req/s | ${fixed(lateOverEarly, 2)} |`);
    out(`\ntokens per second: ${m.okPerSecond.join(' ')}`);
  }
  if (report.chain) {
    out('\nThe audit chain on PostgreSQL: one chain, however many replicas append to it:\n');
    out('| run | events appended per second | PostgreSQL CPU per request | `deadlock detected` in its log | ERROR lines in its log |');
    out('| --- | --- | --- | --- | --- |');
    for (const run of report.chain) {
      const cpu = run.postgresCpuMsPerRequest === undefined ? 'n/a' : `${fixed(run.postgresCpuMsPerRequest, 2)} ms`;
      out(`| ${run.target} | ${fixed(run.eventsPerSecond, 0)} | ${cpu} | ${run.deadlocks} | ${run.errors} |`);
    }
  }
  if (report.baseline) {
    out('\nThis build against the baseline (SQLite: loaded in the same turns; PostgreSQL: each pair one after the other):\n');
    out('| run | baseline req/s | req/s | ratio | baseline p99 | p99 | baseline CPU per request | CPU per request | baseline peak RSS, largest process | peak RSS, largest process |');
    out('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const b of report.baseline) {
      out(
        `| ${b.target} | ${fixed(b.baselineReqPerSec, 0)} | ${fixed(b.reqPerSec, 0)} | ${fixed(b.reqPerSec / b.baselineReqPerSec, 2)} | ${b.baselineP99Ms} ms | ${b.p99Ms} ms | ` +
          `${fixed(b.baselineCpuMsPerRequest, 2)} ms | ${fixed(b.cpuMsPerRequest, 2)} ms | ${fixed(b.baselineLargestRssMB, 0)} MB | ${fixed(b.largestRssMB, 0)} MB |`,
      );
    }
  }
  out('\nTargets:\n');
  out('| target | measured | met |');
  out('| --- | --- | --- |');
  for (const check of report.targets) out(`| ${check.what} | ${check.measured} | ${check.met === null ? '-' : check.met ? 'yes' : 'NO'} |`);
  for (const profile of report.profiles ?? []) {
    if (profile.areas) {
      out(`\nWhere the time goes, ${profile.target}: self time by area (idle excluded; src/ by folder, packages by name):\n`);
      out('| area | self ms | self % |');
      out('| --- | --- | --- |');
      for (const area of profile.areas.filter((a) => a.selfPercent >= 0.5)) out(`| ${area.area} | ${area.selfMs.toFixed(0)} | ${area.selfPercent.toFixed(1)} |`);
    }
    out(`\nHottest functions by self time, ${profile.target} (idle excluded):\n`);
    out('| self ms | self % | function | where | mostly called from |');
    out('| --- | --- | --- | --- | --- |');
    for (const hot of profile.hottest) {
      out(`| ${hot.selfMs.toFixed(0)} | ${hot.selfPercent.toFixed(1)} | ${hot.function} | ${hot.location} | ${hot.calledFrom} |`);
    }
  }
}

/**
 * Says on stderr what failed, loudly when failures are most of a run, so no one quotes a table
 * of refusal timings. True when some run mostly failed (the bench then exits 1).
 */
export function warnAboutFailures(runs: Measurement[]): boolean {
  let anyMostlyFailed = false;
  for (const run of runs) {
    if (run.logLines > 0) say(`note: ${run.target}: the server wrote ${run.logLines} log lines during the run`);
    if (failures(run) === 0) continue;
    const codes = Object.entries(run.statusCodes).map(([code, count]) => `${code}: ${count}`).join(', ');
    const detail = `${run.non2xx} non-2xx and ${run.errors} errors (${run.timeouts} timeouts) of ${run.requests} responses [${codes}]; one of them: ${run.failureSample ?? '?'}`;
    if (mostlyFailed(run)) {
      anyMostlyFailed = true;
      say(`\n!!! ${run.target}: MOST RESPONSES FAILED: its figures measure refusals, not issuance.\n!!! ${detail}\n`);
    } else {
      say(`warning: ${run.target}: ${detail}`);
    }
  }
  return anyMostlyFailed;
}
