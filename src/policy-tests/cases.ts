import { readFileSync } from 'node:fs';
import { isMap, isScalar, LineCounter, parseDocument, type Document } from 'yaml';
import { z } from 'zod';
import type { BrokerConfig } from '../config/index.js';
import { PolicyTestsInvalid, type FileProblem } from '../shared/errors.js';
import { YAML_OPTIONS, yamlProblems } from '../shared/yaml.js';

/**
 * A policy cases file (CONTRACT section 7, `jit policy test`): requests a configuration must
 * answer in a stated way, kept beside it and reviewed like code. Read strictly: an unknown field,
 * a field of the wrong shape, or a case that could never be reached under the configuration (an
 * issuer, a scope or an object type it lacks) makes the file invalid, each problem named with its
 * line, rather than a case that passes for the wrong reason.
 */

/** What a case expects the broker to answer (CONTRACT section 7). */
export const OUTCOMES = ['issued', 'pending_approval', 'policy_denied', 'separation_of_duties', 'invalid_request', 'invalid_token'] as const;
export type Outcome = (typeof OUTCOMES)[number];

/** Outcomes that grant: only they have a lifetime and a number of approvals to expect. */
const GRANTING: readonly Outcome[] = ['issued', 'pending_approval'];

const text = (max: number) => z.string().min(1).max(max);

/**
 * Claims a case's token carries as the broker takes it (an `exp` ahead), never the case's. `nbf`
 * and `iat` a token may lack, and `aud` may name another audience: a case states them where it
 * needs them (without `aud`, its token is for the issuer's first audience).
 */
const TOKEN_CLAIMS = ['exp'];

const identitySchema = z.strictObject({
  issuer: text(64),
  // As long as a token's `sub` may be: the broker's own bound (1,024 bytes) judges it, as it judges a token.
  subject: z.string().min(1),
  claims: z
    .record(z.string().min(1), z.unknown())
    .optional()
    .refine((claims) => claims === undefined || (!Object.hasOwn(claims, 'sub') && !Object.hasOwn(claims, 'iss')), 'give sub as subject and the issuer by its name as issuer, not as claims')
    // A case's token is one sent while it is valid.
    .refine((claims) => claims === undefined || !TOKEN_CLAIMS.some((claim) => Object.hasOwn(claims, claim)), `a case's token is valid now: give none of ${TOKEN_CLAIMS.join(', ')}`),
});

// As the API takes them: an empty list is a list (RFC 9396 names no minimum).
const detailList = z.array(text(256)).max(16);

/** As `POST /v1/credentials` takes them (CONTRACT section 4). */
const requestSchema = z.strictObject({
  scopes: z
    .array(text(128))
    .min(1)
    .max(32)
    .refine((list) => new Set(list).size === list.length, 'must not repeat a scope'),
  audience: text(512),
  ttl_seconds: z.number().int().min(1).optional(),
  break_glass: z.boolean().default(false),
  justification: z.string().max(2000).optional(),
  authorization_details: z
    .array(
      z.strictObject({
        type: text(256),
        identifier: text(256).optional(),
        actions: detailList.optional(),
        locations: detailList.optional(),
        datatypes: detailList.optional(),
        privileges: detailList.optional(),
      }),
    )
    .min(1)
    .max(16)
    .optional(),
  /** The request carries a valid DPoP proof. */
  dpop: z.boolean().default(false),
});

const expectSchema = z
  .strictObject({
    outcome: z.enum(OUTCOMES),
    approvals_required: z.number().int().min(0).max(10).optional(),
    ttl_seconds: z.number().int().min(1).optional(),
  })
  .superRefine((expect, ctx) => {
    if (GRANTING.includes(expect.outcome)) return;
    for (const field of ['approvals_required', 'ttl_seconds'] as const) {
      if (expect[field] !== undefined) ctx.addIssue({ code: 'custom', path: [field], message: `only a granting outcome (issued, pending_approval) has one, not ${expect.outcome}` });
    }
  });

const caseSchema = z.strictObject({
  name: text(200),
  identity: identitySchema,
  actor: identitySchema.optional(),
  request: requestSchema,
  expect: expectSchema,
});

const fileSchema = z.strictObject({ cases: z.array(caseSchema).min(1, 'name at least one case') });

/** Cases sharing a name, read from the file as it is (so they are found with every other problem). */
function repeatedNames(raw: unknown): [Path, string][] {
  const cases = (raw as { cases?: unknown } | null)?.cases;
  if (!Array.isArray(cases)) return [];
  const seen = new Map<string, number>();
  return cases.flatMap((one: unknown, i): [Path, string][] => {
    const name = (one as { name?: unknown } | null)?.name;
    if (typeof name !== 'string') return [];
    const earlier = seen.get(name);
    if (earlier === undefined) seen.set(name, i);
    return earlier === undefined ? [] : [[['cases', i, 'name'], `"${name}" is the name of cases.${earlier} too; a case is known by its name`]];
  });
}

type CaseInput = z.output<typeof caseSchema>;
export type CaseIdentity = CaseInput['identity'];
export type CaseRequest = CaseInput['request'];
export type CaseExpectation = CaseInput['expect'];

/** One case, with the line it starts on. */
export interface PolicyCase extends CaseInput {
  line: number;
}

type Path = readonly (string | number)[];

/** Reads a cases file and checks it against the configuration it is run with. Throws `PolicyTestsInvalid`. */
export function readPolicyCases(file: string, config: BrokerConfig): PolicyCase[] {
  let source: string;
  try {
    source = readFileSync(file, 'utf8');
  } catch (error) {
    throw new PolicyTestsInvalid([{ file, message: `cannot read the file (${(error as NodeJS.ErrnoException).code ?? 'error'})` }]);
  }
  return parsePolicyCases(file, source, config);
}

/** Parses the text of a cases file (see `readPolicyCases`). */
export function parsePolicyCases(file: string, source: string, config: BrokerConfig): PolicyCase[] {
  const lines = new LineCounter();
  const doc = parseDocument(source, { ...YAML_OPTIONS, lineCounter: lines, prettyErrors: false });
  const invalid = yamlProblems(doc);
  if (invalid.length > 0) {
    throw new PolicyTestsInvalid(invalid.map((problem) => ({ file, line: lines.linePos(problem.pos[0]).line, message: `not valid YAML: ${problem.message}` })));
  }
  const at = locate(doc, lines);
  const problem = (path: Path, message: string, key?: string): FileProblem => ({ file, line: at(path, key), field: [...path, ...(key !== undefined ? [key] : [])].join('.') || '(root)', message });

  let raw: unknown;
  try {
    raw = doc.toJS();
  } catch (error) {
    // yaml refuses, as it converts, aliases that would expand without bound ("billion laughs").
    throw new PolicyTestsInvalid([{ file, line: 1, message: `not valid YAML: ${(error as Error).message.split('\n')[0]}` }]);
  }
  const parsed = fileSchema.safeParse(raw);
  const shape = parsed.success
    ? []
    : parsed.error.issues.flatMap((issue) => {
        const path = issue.path as (string | number)[];
        return issue.code === 'unrecognized_keys' ? issue.keys.map((key) => problem(path, 'unknown field', key)) : [problem(path, issue.message)];
      });
  const problems = [...shape, ...repeatedNames(raw).map(([path, message]) => problem(path, message))].sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
  if (!parsed.success || problems.length > 0) throw new PolicyTestsInvalid(problems);
  const unreachable = parsed.data.cases.flatMap((one, i) => unreachableParts(one, config).map(([path, message]) => problem(['cases', i, ...path], message)));
  if (unreachable.length > 0) throw new PolicyTestsInvalid(unreachable);
  return parsed.data.cases.map((one, i) => ({ ...one, line: at(['cases', i]) ?? 1 }));
}

/**
 * What a case names that the configuration lacks: such a case can never be reached (the broker
 * would refuse it for the name alone), so passing it would prove nothing but a typo.
 */
function unreachableParts(one: CaseInput, config: BrokerConfig): [Path, string][] {
  const issuers = new Set(config.identity.issuers.map((issuer) => issuer.name));
  const scopes = new Set(config.scopes.map((scope) => scope.name));
  const types = new Set(config.duties.map((duty) => duty.type));
  const found: [Path, string][] = [];
  for (const who of ['identity', 'actor'] as const) {
    const issuer = one[who]?.issuer;
    if (issuer !== undefined && !issuers.has(issuer)) found.push([[who, 'issuer'], `no identity issuer is named "${issuer}" in the configuration`]);
  }
  one.request.scopes.forEach((scope, i) => {
    if (!scopes.has(scope)) found.push([['request', 'scopes', i], `no scope is named "${scope}" in the configuration`]);
  });
  (one.request.authorization_details ?? []).forEach((detail, i) => {
    if (!types.has(detail.type)) found.push([['request', 'authorization_details', i, 'type'], `no duty has the type "${detail.type}" in the configuration`]);
  });
  return found;
}

/** The line of a path (of `key` in the map at a path), else of its nearest ancestor there is. */
function locate(doc: Document, lines: LineCounter): (path: Path, key?: string) => number | undefined {
  const lineOf = (offset: number | undefined) => (offset === undefined ? undefined : lines.linePos(offset).line);
  return (path, key) => {
    if (key !== undefined) {
      const map = doc.getIn(path, true);
      const pair = isMap(map) ? map.items.find((item) => isScalar(item.key) && String(item.key.value) === key) : undefined;
      const found = pair && isScalar(pair.key) ? lineOf(pair.key.range?.[0]) : undefined;
      if (found !== undefined) return found;
    }
    for (let length = path.length; length >= 0; length -= 1) {
      const node = length === 0 ? doc.contents : doc.getIn(path.slice(0, length), true);
      const range = (node as { range?: [number, number, number] } | null | undefined)?.range;
      if (range) return lineOf(range[0]);
    }
    return undefined;
  };
}
