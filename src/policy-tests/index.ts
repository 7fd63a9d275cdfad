export { OUTCOMES, parsePolicyCases, readPolicyCases } from './cases.js';
export type { CaseExpectation, CaseIdentity, CaseRequest, Outcome, PolicyCase } from './cases.js';
export { evaluateCase } from './evaluate.js';
export type { Answer, CaseAsk, CaseOutcome } from './evaluate.js';
export { explainRequest } from './explain.js';
export type { IdentityView, LifetimeSource, RequestExplanation, ScopeView } from './explain.js';
export { checkPolicyTests, describeResult, loadTestedConfig, policyTestsFile, reportSummary, runCases, runPolicyTests } from './suite.js';
export type { CaseResult, PolicyTestReport } from './suite.js';
