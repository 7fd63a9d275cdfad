import { dirname, isAbsolute, join } from 'node:path';
import { ConfigError, loadConfig, type BrokerConfig, type LoadedConfig } from '../config/index.js';
import { compileRules, type Rules } from '../settings/index.js';
import { fileProblemText, PolicyTestsInvalid } from '../shared/errors.js';
import { readPolicyCases, type CaseExpectation, type PolicyCase } from './cases.js';
import { evaluateCase, type CaseOutcome } from './evaluate.js';

/** One case run: what it expected, what the broker would answer, and whether they agree. */
export interface CaseResult {
  name: string;
  line: number;
  expected: CaseExpectation;
  actual: CaseOutcome;
  passed: boolean;
}

export interface PolicyTestReport {
  /** The cases file. */
  file: string;
  results: CaseResult[];
  passed: number;
  failed: number;
}

/** Whether the answer is what the case expects: the outcome, and the approvals and lifetime where it names them. */
const agrees = (expected: CaseExpectation, actual: CaseOutcome): boolean =>
  expected.outcome === actual.outcome &&
  (expected.approvals_required === undefined || expected.approvals_required === actual.approvalsRequired) &&
  (expected.ttl_seconds === undefined || expected.ttl_seconds === actual.ttlSeconds);

/** Runs parsed cases against compiled rules. */
export function runCases(rules: Rules, file: string, cases: readonly PolicyCase[]): PolicyTestReport {
  const results = cases.map((one) => {
    const actual = evaluateCase(rules, one);
    return { name: one.name, line: one.line, expected: one.expect, actual, passed: agrees(one.expect, actual) };
  });
  const passed = results.filter((result) => result.passed).length;
  return { file, results, passed, failed: results.length - passed };
}

/**
 * Runs a cases file against a configuration by the broker's own rules. Throws
 * `PolicyTestsInvalid` when the file cannot be run as it is; failing cases are results.
 */
export function runPolicyTests(file: string, config: BrokerConfig): PolicyTestReport {
  return runCases(compileRules(config), file, readPolicyCases(file, config));
}

/** `issued, 900 s`, `pending_approval, 1 approval, 600 s`, `policy_denied`. */
function summary(outcome: { outcome: string; approvals?: number | undefined; ttl?: number | undefined }): string {
  const approvals = outcome.outcome === 'pending_approval' && outcome.approvals !== undefined ? `, ${outcome.approvals} approval${outcome.approvals === 1 ? '' : 's'}` : '';
  return `${outcome.outcome}${approvals}${outcome.ttl !== undefined ? `, ${outcome.ttl} s` : ''}`;
}

const expectedSummary = (expected: CaseExpectation) =>
  `${expected.outcome}${expected.approvals_required !== undefined ? `, ${expected.approvals_required} approval${expected.approvals_required === 1 ? '' : 's'}` : ''}${expected.ttl_seconds !== undefined ? `, ${expected.ttl_seconds} s` : ''}`;

const actualSummary = (actual: CaseOutcome) =>
  `${summary({ outcome: actual.outcome, approvals: actual.approvalsRequired, ttl: actual.ttlSeconds })}${actual.detail ? ` (${actual.detail})` : ''}`;

/** What a failing case expected, and what the broker would answer instead (with its reason). */
const difference = (result: CaseResult) => `expected ${expectedSummary(result.expected)}, got ${actualSummary(result.actual)}`;

/** One line for a case: what the broker answers; for a failure, where the case is, and what it expected. */
export function describeResult(file: string, result: CaseResult): string {
  if (result.passed) return `PASS  ${result.name}: ${actualSummary(result.actual)}`;
  return `FAIL  ${result.name} (${file}:${result.line}): ${difference(result)}`;
}

export const reportSummary = (report: PolicyTestReport): string =>
  `${report.results.length} case${report.results.length === 1 ? '' : 's'}: ${report.passed} passed, ${report.failed} failed`;

/** Where a configuration's `policyTests` file is: relative to the configuration file. */
export function policyTestsFile(config: BrokerConfig, configFile: string): string | undefined {
  const named = config.policyTests;
  // Joined, not resolved: messages name the file as the operator would (config/x.cases.yaml).
  return named === undefined ? undefined : isAbsolute(named) ? named : join(dirname(configFile), named);
}

/**
 * A configuration's own `policyTests`, run as a start, `--check-config` and a reload run them:
 * the report when every case passes (undefined without `policyTests`); else `ConfigError`, one
 * problem per failing case, naming it, or per problem of a file that cannot be run.
 */
export function checkPolicyTests(loaded: Pick<LoadedConfig, 'config' | 'file'>): PolicyTestReport | undefined {
  const file = policyTestsFile(loaded.config, loaded.file);
  if (file === undefined) return undefined;
  let report: PolicyTestReport;
  try {
    report = runPolicyTests(file, loaded.config);
  } catch (error) {
    if (error instanceof PolicyTestsInvalid) throw new ConfigError(loaded.file, error.problems.map((problem) => `policyTests: ${fileProblemText(problem)}`));
    throw error;
  }
  const failed = report.results.filter((result) => !result.passed);
  if (failed.length > 0) {
    throw new ConfigError(loaded.file, [
      ...failed.map((result) => `policyTests: case "${result.name}" (${file}:${result.line}): ${difference(result)}`),
      `policyTests: ${reportSummary(report)}`,
    ]);
  }
  return report;
}

/**
 * The configuration as a start takes it: read and validated (`loadConfig`), and its own
 * `policyTests` passing. Throws `ConfigError` naming every problem, failing cases included.
 * `text`: the file's text as read before (see `loadConfig`).
 */
export function loadTestedConfig(file: string, env: NodeJS.ProcessEnv, text?: string): LoadedConfig & { policyTests?: PolicyTestReport } {
  const loaded = loadConfig(file, env, text);
  const report = checkPolicyTests(loaded);
  return report ? { ...loaded, policyTests: report } : loaded;
}
