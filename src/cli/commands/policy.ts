import { ConfigError, loadConfig, resolveConfigPath, type BrokerConfig, type MatchConfig } from '../../config/index.js';
import {
  describeResult,
  explainRequest,
  reportSummary,
  runPolicyTests,
  type CaseAsk,
  type PolicyTestReport,
  type RequestExplanation,
} from '../../policy-tests/index.js';
import { compileRules } from '../../settings/index.js';
import { PolicyTestsInvalid, type FileProblem } from '../../shared/errors.js';
import { parseClaims } from '../claims.js';
import type { CliIo } from '../cli-io.js';
import { parseTtlSeconds } from '../duration.js';
import { argumentInMessage, EXIT, parse, shown, usage } from '../io.js';
import { printJson } from '../views.js';

export const help = `jit policy test FILE [--config FILE] [--json]
  Runs the cases of FILE against the configuration with the broker's own rules (policies,
  approvals, separation, duties, delegation, DPoP), without a broker or a database. FILE is YAML:
    cases:
      - name: a deploy waits for an approver
        identity: { issuer: ci, subject: "repo:acme/ml:ref:refs/heads/main", claims: { actor: bob } }
        actor: { issuer: agents, subject: "agent:release-1" }        # optional: an agent acting for it
        request: { scopes: [model:deploy], audience: registry, ttl_seconds: 300, break_glass: false,
                   justification: "...", authorization_details: [{ type: model, identifier: fraud-v7 }],
                   dpop: false }                                     # only scopes and audience required
        expect: { outcome: pending_approval, approvals_required: 1, ttl_seconds: 300 }
  outcome: issued, pending_approval, policy_denied, separation_of_duties, invalid_request or
  invalid_token. A case is one request on its own: what needs history (live grants, steps taken
  earlier, quotas, limits) is not judged. One line per case and a summary; --json the results.
  Exit 0 all pass, 1 a case fails, 2 the file or the configuration is invalid (each problem with
  its line), as is a case naming an issuer, scope or object type the configuration lacks.
jit policy explain --issuer NAME --subject SUB [--claim k=v ...] --scope S [--scope ...] --audience A
                   [--object TYPE=ID ...] [--ttl D] [--break-glass --justification T] [--dpop]
                   [--actor-issuer NAME --actor-subject SUB [--actor-claim k=v ...]] [--config FILE] [--json]
  Which policy grants each scope (or why none does), its lifetime cap and where it comes from,
  approvals and who may give them, the duty step it is, separation rules, DPoP, the delegation
  rule for an actor, and the outcome the broker would give: judged as jit policy test judges.
  --claim   a claim of the identity; a value starting with [ or { is JSON (groups=["a","b"])
  --config  the broker's configuration (default: env BROKER_CONFIG, else config/broker.yaml)`;

export async function policy(args: string[], io: CliIo): Promise<number> {
  const [what, ...rest] = args;
  if (what === 'test') return test(rest, io);
  if (what === 'explain') return explain(rest, io);
  throw usage('policy needs test or explain');
}

/** The configuration the cases are judged against; an invalid one is an invalid input (exit 2). */
function configuration(io: CliIo, file: string | undefined): BrokerConfig | FileProblem[] {
  const path = file ?? resolveConfigPath([], io.env);
  try {
    return loadConfig(path, {}).config;
  } catch (error) {
    if (error instanceof ConfigError) return error.problems.map((message) => ({ file: error.file, message }));
    throw error;
  }
}

async function test(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, { config: { type: 'string' }, json: { type: 'boolean', default: false } }, ['FILE']);
  const [file] = positionals;
  if (file === undefined) throw usage('policy test needs the cases FILE');
  const invalid = (problems: readonly FileProblem[]) => {
    for (const problem of problems) io.stderr(`jit policy test: ${shown(`${problem.file}${problem.line !== undefined ? `:${problem.line}` : ''}: ${problem.field !== undefined ? `${problem.field}: ` : ''}${problem.message}`)}\n`);
    if (values.json) printJson(io, { file, valid: false, problems });
    return EXIT.usage;
  };
  const config = configuration(io, values.config);
  if (Array.isArray(config)) return invalid(config);
  let report: PolicyTestReport;
  try {
    report = runPolicyTests(file, config);
  } catch (error) {
    if (error instanceof PolicyTestsInvalid) return invalid(error.problems);
    throw error;
  }
  if (values.json) printJson(io, reportJson(report));
  else {
    for (const result of report.results) io.stdout(`${shown(describeResult(file, result))}\n`);
    io.stdout(`${reportSummary(report)}\n`);
  }
  return report.failed > 0 ? EXIT.failed : EXIT.ok;
}

/** The results as JSON: snake_case as the broker's own answers are. */
const reportJson = (report: PolicyTestReport) => ({
  file: report.file,
  valid: true,
  passed: report.passed,
  failed: report.failed,
  cases: report.results.map((result) => ({
    name: result.name,
    line: result.line,
    passed: result.passed,
    expected: result.expected,
    actual: {
      outcome: result.actual.outcome,
      ...(result.actual.approvalsRequired !== undefined ? { approvals_required: result.actual.approvalsRequired } : {}),
      ...(result.actual.ttlSeconds !== undefined ? { ttl_seconds: result.actual.ttlSeconds } : {}),
      ...(result.actual.detail !== undefined ? { detail: result.actual.detail } : {}),
    },
  })),
});

async function explain(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, {
    issuer: { type: 'string' },
    subject: { type: 'string' },
    claim: { type: 'string', multiple: true, default: [] },
    scope: { type: 'string', multiple: true, default: [] },
    audience: { type: 'string' },
    object: { type: 'string', multiple: true, default: [] },
    ttl: { type: 'string' },
    'break-glass': { type: 'boolean', default: false },
    justification: { type: 'string' },
    dpop: { type: 'boolean', default: false },
    'actor-issuer': { type: 'string' },
    'actor-subject': { type: 'string' },
    'actor-claim': { type: 'string', multiple: true, default: [] },
    config: { type: 'string' },
    json: { type: 'boolean', default: false },
  });
  if (!values.issuer || !values.subject) throw usage('--issuer and --subject name the identity');
  const scopes = values.scope.flatMap((scope) => scope.split(/[\s,]+/)).filter(Boolean);
  if (scopes.length === 0) throw usage('at least one --scope is required');
  if (!values.audience) throw usage('--audience is required');
  if ((values['actor-issuer'] === undefined) !== (values['actor-subject'] === undefined)) throw usage('--actor-issuer and --actor-subject go together');
  const objects = values.object.map((object) => {
    const split = object.indexOf('=');
    if (split <= 0 || split === object.length - 1) throw usage(`--object takes TYPE=IDENTIFIER, such as model=fraud-v1 (got ${shown(argumentInMessage(object))})`);
    return { type: object.slice(0, split), identifier: object.slice(split + 1) };
  });

  const config = configuration(io, values.config);
  if (Array.isArray(config)) {
    for (const problem of config) io.stderr(`jit policy explain: ${shown(`${problem.file}: ${problem.message}`)}\n`);
    return EXIT.usage;
  }
  const issuers = config.identity.issuers.map((issuer) => issuer.name);
  for (const issuer of [values.issuer, values['actor-issuer']]) {
    if (issuer !== undefined && !issuers.includes(issuer)) throw usage(`no identity issuer is named "${shown(issuer)}" (have: ${issuers.join(', ')})`);
  }
  const ask: CaseAsk = {
    identity: { issuer: values.issuer, subject: values.subject, claims: parseClaims(values.claim) },
    ...(values['actor-issuer'] !== undefined && values['actor-subject'] !== undefined
      ? { actor: { issuer: values['actor-issuer'], subject: values['actor-subject'], claims: parseClaims(values['actor-claim'], '--actor-claim') } }
      : {}),
    request: {
      scopes,
      audience: values.audience,
      ...(values.ttl !== undefined ? { ttl_seconds: parseTtlSeconds(values.ttl) } : {}),
      break_glass: values['break-glass'],
      ...(values.justification !== undefined ? { justification: values.justification } : {}),
      ...(objects.length > 0 ? { authorization_details: objects } : {}),
      dpop: values.dpop,
    },
  };
  const explained = explainRequest(compileRules(config), ask);
  if (values.json) printJson(io, explained);
  else io.stdout(explanationText(ask, explained));
  return EXIT.ok;
}

/** A `match` as a line: `sso groups=ml-release`. */
const matchText = (match: MatchConfig) =>
  [
    match.issuer,
    ...(match.subject !== undefined ? [`subject=${match.subject}`] : []),
    ...Object.entries(match.claims ?? {}).map(([name, value]) => `${name}=${typeof value === 'string' ? value : JSON.stringify(value)}`),
  ].join(' ');

const seconds = (value: number) => (value % 60 === 0 && value >= 60 ? `${value / 60} min` : `${value} s`);

/** One screen: who, what, the outcome, then each scope, then delegation and lifetime. Every line made safe for a terminal. */
function explanationText(ask: CaseAsk, e: RequestExplanation): string {
  const lines: string[] = [];
  const line = (text: string) => lines.push(shown(text));
  const row = (label: string, value: string, indent = '') => line(`${indent}${label.padEnd(indent ? 12 : 11)}${value}`);
  const who = (view: RequestExplanation['identity']) =>
    'refused' in view
      ? `REFUSED: ${view.refused}`
      : `${view.idp} ${view.sub} (${view.kind}${view.initiator !== undefined ? `, started by ${view.initiator}` : ''}${view.person !== undefined ? `; separation counts it as ${view.person}` : ''}; roles: ${view.roles.join(', ') || 'none'})`;
  row('identity', who(e.identity));
  if (e.actor) row('actor', who(e.actor));
  const objects = ask.request.authorization_details?.map((detail) => `${detail.type}=${detail.identifier ?? '?'}`).join(' ');
  row('request', `${ask.request.scopes.join(' ')} for ${ask.request.audience}${objects ? ` on ${objects}` : ''}${ask.request.break_glass ? ', BREAK-GLASS' : ''}${ask.request.dpop ? ', with a DPoP proof' : ''}`);
  const { outcome } = e;
  const granted = outcome.ttlSeconds !== undefined ? `: ${outcome.approvalsRequired ? `${outcome.approvalsRequired} approval${outcome.approvalsRequired > 1 ? 's' : ''}, ` : ''}${seconds(outcome.ttlSeconds)}` : '';
  row('outcome', `${outcome.outcome}${granted}${outcome.detail ? ` (${outcome.detail})` : ''}`);
  if (e.policy) row('policies', `matching this identity: ${e.policy.matching.join(', ') || 'none'}`);

  for (const scope of e.scopes) {
    line('');
    const config = scope.config;
    line(config ? `${scope.scope}  ${config.risk} risk, at most ${seconds(Math.floor(config.maxTtl / 1000))}` : `${scope.scope}  NOT A CONFIGURED SCOPE: no policy can grant it`);
    if (!config) continue;
    const stands = scope.policies.map((stand) => `${stand.policy}${stand.grants === true ? '' : stand.grants === 'audience' ? ' (not for this audience)' : ' (not for the objects named)'}`);
    if (!e.policy) row('policy', 'not judged: the identity would be refused', '  ');
    else if (scope.grantedBy) row('granted by', `policy ${scope.grantedBy}${stands.length > 1 ? `, the first in configuration order of ${stands.join(', ')}` : ''}`, '  ');
    else row('refused', stands.length > 0 ? `listed by ${stands.join(', ')}` : 'no policy matching this identity lists it', '  ');
    if (scope.cap) {
      const from = scope.cap.from;
      const source = from.kind === 'policy' ? `policy ${from.policy}'s maxTtl` : from.kind === 'break-glass' ? 'the scope\'s break-glass maxTtl' : 'the scope\'s maxTtl';
      row('lifetime', `at most ${seconds(scope.cap.seconds)}: ${source}`, '  ');
    }
    if (scope.approvals > 0) {
      const roles = e.approverRoles.map(matchText).join('; ') || 'no roles rule gives it';
      row('approvals', `${scope.approvals} distinct ${scope.approvals > 1 ? 'people' : 'person'} with the approver role (${roles})${scope.approvers ? `, and only ${matchText(scope.approvers)}` : ''}`, '  ');
      row('', 'never the requester, its person, whoever started its job, or an actor of the request', '  ');
    } else row('approvals', 'none: issued at once', '  ');
    if (scope.step) row('duty', `${scope.step.duty}, step ${scope.step.step}: names its object (authorization_details type ${scope.step.type}); whoever took part in another step of that object may not take part`, '  ');
    const toxic = e.policy?.separation.filter((rule) => rule.scopes.includes(scope.scope)) ?? [];
    for (const rule of toxic) row('separation', `${rule.rule}: never held at once with ${rule.scopes.filter((other) => other !== scope.scope).join(', ')}`, '  ');
    row('DPoP', scope.requireDpop ? 'required: only issued DPoP-bound' : 'not required', '  ');
    if (config.breakGlass?.allowed) row('break-glass', `allowed, at most ${seconds(Math.floor((config.breakGlass.maxTtl ?? config.maxTtl) / 1000))}`, '  ');
  }

  line('');
  if (e.delegation) {
    row('delegation', 'rule' in e.delegation ? `rule ${e.delegation.rule}${e.delegation.maxTtlSeconds !== undefined ? `, at most ${seconds(e.delegation.maxTtlSeconds)}` : ''}` : `REFUSED: ${e.delegation.refused}`);
  }
  if (e.lifetime) {
    const from = e.lifetime.from;
    const source =
      from.kind === 'delegation' ? `delegation rule ${from.rule}'s maxTtl`
      : from.kind === 'requested' ? 'the ttl_seconds asked'
      : from.kind === 'policy' ? `policy ${from.policy}'s maxTtl for ${from.scope}`
      : from.kind === 'break-glass' ? `${from.scope}'s break-glass maxTtl`
      : `${from.scope}'s maxTtl`;
    row('lifetime', `${seconds(e.lifetime.seconds)}, set by ${source}`);
  }
  return `${lines.join('\n').replace(/\n+$/, '')}\n`;
}
