import ms from 'ms';
import { z } from 'zod';

/**
 * The broker's configuration file, CONTRACT section 2. This schema is its reference: every
 * field's `.describe()` text is what the README's configuration table shows
 * (`npm run config:reference` regenerates it; a test fails when they drift).
 * Durations are parsed to milliseconds.
 */

const DURATION_FORMAT = /^\d+(\.\d+)?\s*(ms|s|m|h|d|w)$/;

const duration = (description: string, { atLeast = 1 }: { atLeast?: number } = {}) =>
  z
    .string()
    .describe(description)
    .transform((text, ctx) => {
      const value = DURATION_FORMAT.test(text.trim()) ? ms(text.trim() as ms.StringValue) : Number.NaN;
      if (!Number.isFinite(value) || value <= 0) {
        ctx.addIssue({ code: 'custom', message: `"${text}" is not a duration such as 30s, 15m, 1h or 7d` });
        return z.NEVER;
      }
      if (value < atLeast) {
        ctx.addIssue({ code: 'custom', message: `"${text}" is shorter than ${ms(atLeast, { long: true })}` });
        return z.NEVER;
      }
      return value;
    });

/** Token lifetimes are whole seconds (`expires_in`, `exp`): a cap under one second would mint dead tokens. */
const lifetime = (description: string) => duration(description, { atLeast: 1000 });

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

/** https everywhere, plain http only to this machine (tests and development). */
const secureUrl = (description: string) =>
  z
    .string()
    .describe(`${description} https, or plain http to a loopback host.`)
    .refine(
      (text) => {
        try {
          const url = new URL(text);
          return url.protocol === 'https:' || (url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname));
        } catch {
          return false;
        }
      },
      { message: 'must be an https URL (plain http only for loopback hosts)' },
    );

export const SIGNING_ALGORITHMS = ['ES256', 'EdDSA', 'RS256'] as const;

/** Asymmetric JWS algorithms an identity issuer may use; `none` and HMAC never verify an identity. */
export const IDENTITY_ALGORITHMS = [
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519',
] as const;

const identityAlgorithm = z.string().refine((alg) => (IDENTITY_ALGORITHMS as readonly string[]).includes(alg), {
  message: `must be one of ${IDENTITY_ALGORITHMS.join(', ')} (never none, never an HMAC algorithm)`,
});

export const DEV_ISSUER_ALGORITHM = 'ES256';

export const ROLES = ['approver', 'auditor', 'admin', 'introspector'] as const;
export type Role = (typeof ROLES)[number];

export const WEBHOOK_EVENTS = [
  'approval.requested',
  'request.approved',
  'request.denied',
  'breakglass.used',
  'breakglass.review_overdue',
] as const;
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number];

export const SCOPE_NAME = /^[a-z0-9][a-z0-9:._/-]{0,127}$/;

const matchSchema = z
  .strictObject({
    issuer: z.string().describe('Name of a configured identity issuer.'),
    subject: z.string().optional().describe('The token\'s `sub`: an exact string or a glob where `*` matches any run of characters.'),
    claims: z
      .record(z.string(), z.union([z.string(), z.number(), z.boolean()]).transform(String))
      .optional()
      .describe('Claim name to exact value or glob; a claim holding an array matches when any element matches.'),
  })
  .describe('Which identities a rule applies to; every listed key must match.');
export type MatchConfig = z.output<typeof matchSchema>;

const jwkSetSchema = z.object({ keys: z.array(z.record(z.string(), z.unknown())).min(1) });

const issuerSchema = z
  .strictObject({
    name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/, 'lower-case letters, digits, - and _').describe('Used in policies and records (`idp`, `client_id`): lower-case letters, digits, `-` and `_`.'),
    kind: z.enum(['workload', 'person']).describe('`workload` (pipelines, jobs, services) or `person` (people from an SSO).'),
    issuer: z.string().min(1).describe('The exact `iss` of its tokens.'),
    jwksUri: secureUrl('Where its public keys are fetched (cached, refetched on an unknown `kid` at most every few seconds).').optional(),
    jwksFile: z.string().optional().describe('A file holding its JWKS, read at start.'),
    jwks: jwkSetSchema.optional().describe('Its JWKS inline.'),
    dev: z
      .strictObject({ keyDir: z.string().describe('Where the development key pair lives (created on first use).') })
      .optional()
      .describe('DEVELOPMENT ONLY: a local issuer whose tokens `jit dev-token` mints. Never in production.'),
    jwksTimeout: duration('How long a JWKS fetch may take before the identity is refused.').prefault('5s'),
    audiences: z.array(z.string().min(1)).min(1).describe('Its token\'s `aud` must name one of these.'),
    algorithms: z.array(identityAlgorithm).min(1).describe('Accepted `alg` values: asymmetric only (RS*, PS*, ES*, EdDSA); never none or HMAC.'),
    maxTokenAge: duration('Refuse its tokens older than this, by `iat`.').optional(),
    requiredClaims: z.array(z.string().min(1)).default([]).describe('Claims its tokens must carry (`sub` and `exp` always are).'),
    initiatorClaim: z.string().optional().describe('Workload issuers: the claim naming the person who started the job.'),
    usernameClaim: z.string().optional().describe('Person issuers: the claim compared with a workload\'s `initiatorClaim`.'),
  })
  .superRefine((issuer, ctx) => {
    const sources = (['jwksUri', 'jwksFile', 'jwks', 'dev'] as const).filter((key) => issuer[key] !== undefined);
    if (sources.length !== 1) {
      ctx.addIssue({ code: 'custom', message: 'needs exactly one of jwksUri, jwksFile, jwks, dev', path: [] });
    }
    if (issuer.dev !== undefined && !issuer.algorithms.includes(DEV_ISSUER_ALGORITHM)) {
      ctx.addIssue({ code: 'custom', message: `a dev issuer signs with ${DEV_ISSUER_ALGORITHM}; list it`, path: ['algorithms'] });
    }
    if (issuer.initiatorClaim !== undefined && issuer.kind !== 'workload') {
      ctx.addIssue({ code: 'custom', message: 'only workload issuers have an initiatorClaim', path: ['initiatorClaim'] });
    }
    if (issuer.usernameClaim !== undefined && issuer.kind !== 'person') {
      ctx.addIssue({ code: 'custom', message: 'only person issuers have a usernameClaim', path: ['usernameClaim'] });
    }
  });
export type IssuerConfig = z.output<typeof issuerSchema>;

const scopeSchema = z
  .strictObject({
    name: z.string().regex(SCOPE_NAME, 'must match [a-z0-9][a-z0-9:._/-]{0,127}').describe('The scope string: lower-case letters, digits and `:._/-`, starting with a letter or digit, 128 at most.'),
    risk: z.enum(['low', 'high']).describe('`low` is issued at once; `high` needs approval (or break-glass).'),
    maxTtl: lifetime('Longest lifetime of a token holding this scope.'),
    approvals: z.number().int().min(1).max(10).optional().describe('High risk: how many distinct approvers must approve (default 1).'),
    approvers: matchSchema.optional().describe('High risk: narrows who may approve, beyond the `approver` role.'),
    breakGlass: z
      .strictObject({
        allowed: z.boolean().describe('Whether break-glass may grant this scope.'),
        maxTtl: lifetime('Longest lifetime of a break-glass token holding this scope.').optional(),
      })
      .optional()
      .describe('Emergency access to this scope.'),
  })
  .superRefine((scope, ctx) => {
    if (scope.risk === 'low' && (scope.approvals !== undefined || scope.approvers !== undefined)) {
      ctx.addIssue({ code: 'custom', message: 'approvals and approvers apply to high-risk scopes only', path: ['risk'] });
    }
  })
  .transform((scope) => ({ ...scope, approvals: scope.risk === 'high' ? (scope.approvals ?? 1) : 0 }));
export type ScopeConfig = z.output<typeof scopeSchema>;

const policySchema = z.strictObject({
  id: z.string().min(1).max(128).describe('Names the policy in records.'),
  match: matchSchema,
  scopes: z.array(z.string()).min(1).describe('Scopes this policy grants to the matching identities.'),
  audiences: z.array(z.string().min(1)).min(1).optional().describe('Audiences those scopes may be requested for (default: any).'),
  maxTtl: lifetime('Caps the scopes\' `maxTtl` under this policy. Policies add up: where several grant one scope, the largest of their caps applies.').optional(),
});
export type PolicyConfig = z.output<typeof policySchema>;

const configShape = z
  .strictObject({
    issuer: z
      .url({ protocol: /^https?$/ })
      .describe('The broker\'s own `iss` and public base URL. Never one of the trusted identity issuers.'),
    listen: z
      .strictObject({
        host: z.string().default('127.0.0.1').describe('Interface to listen on (env HOST overrides).'),
        port: z.number().int().min(0).max(65535).default(8080).describe('TCP port (env PORT overrides).'),
      })
      .prefault({})
      .describe('Where the HTTP API listens.'),
    database: z.string().min(1).default('./data/broker.db').describe('SQLite file (env BROKER_DB overrides). Relative paths are from the working directory.'),
    clockSkew: duration('Tolerance for `exp`, `nbf` and `iat` of identity tokens.').prefault('30s'),
    scheduler: z
      .strictObject({
        interval: duration('How often the expiry, review and key jobs run: whole seconds dividing a minute, or whole minutes dividing an hour.').prefault('10s'),
      })
      .prefault({})
      .describe('The in-process jobs: expiry, overdue reviews, key rotation.'),
    signing: z
      .strictObject({
        algorithm: z.enum(SIGNING_ALGORITHMS).default('ES256').describe('Algorithm of the tokens the broker mints.'),
        keyDir: z.string().default('./data/keys').describe('Private signing keys, files mode 0600, created on first start.'),
        rotateEvery: duration('A new signing key after this long; old keys stay in the JWKS until their tokens expire.').prefault('24h'),
        publishAhead: duration('A new key is in the JWKS this long before any token uses it.').prefault('10m'),
      })
      .prefault({})
      .describe('The keys the broker signs its tokens with.'),
    identity: z
      .strictObject({
        issuers: z.array(issuerSchema).min(1).describe('The identity issuers the broker trusts.'),
      })
      .describe('Who may call the broker: every caller proves itself with a token from one of these.'),
    roles: z
      .array(z.strictObject({ role: z.enum(ROLES), match: matchSchema }))
      .prefault([])
      .describe('Who holds `approver`, `auditor`, `admin` (persons) and `introspector` (anyone).'),
    scopes: z.array(scopeSchema).prefault([]).describe('Every scope the broker can grant.'),
    policies: z.array(policySchema).prefault([]).describe('Default deny: a scope is granted only when a policy allows it.'),
    separation: z
      .array(
        z.strictObject({
          name: z.string().min(1).describe('Names the rule in refusals.'),
          scopes: z.array(z.string()).min(2).describe('No identity may hold two of these at once.'),
        }),
      )
      .prefault([])
      .describe('Toxic combinations.'),
    approval: z
      .strictObject({
        timeout: duration('A pending request expires after this.').prefault('1h'),
        collectWithin: duration('An approved request\'s token must be collected within this.').prefault('15m'),
      })
      .prefault({})
      .describe('Deadlines of high-risk requests.'),
    breakGlass: z
      .strictObject({
        justificationMinLength: z.number().int().min(1).max(2000).default(20).describe('Shortest accepted justification.'),
        reviewWithin: duration('A break-glass grant unreviewed after this is flagged overdue.').prefault('24h'),
        maxPerIdentityPerDay: z.number().int().min(0).default(3).describe('Break-glass grants per identity in any 24 hours.'),
      })
      .prefault({})
      .describe('Emergency access: issued at once, loudly, with a quota and a mandatory review.'),
    limits: z
      .strictObject({
        requestsPerMinute: z.number().int().min(1).default(600),
        liveGrants: z.number().int().min(1).default(1000),
        pendingRequests: z.number().int().min(1).default(20),
      })
      .prefault({}),
    notify: z
      .strictObject({
        timeout: duration('How long one webhook delivery attempt may take.').prefault('5s'),
        retries: z.number().int().min(0).max(10).default(3).describe('Further attempts after a failed delivery, with backoff.'),
        webhooks: z
          .array(
            z.strictObject({
              url: secureUrl('Receives a JSON POST per event. Treated as a secret: only its origin is ever logged.'),
              events: z.array(z.enum(WEBHOOK_EVENTS)).min(1).describe('Which events it receives.'),
              secretFile: z
                .string()
                .optional()
                .describe(
                  'A file (mode 0600) holding a Standard Webhooks secret, `whsec_` and base64 of at least 24 bytes. Each delivery is then signed in a `webhook-signature` header, so the receiver can tell the broker from a forger.',
                ),
            }),
          )
          .prefault([]),
      })
      .prefault({})
      .describe('Webhooks, delivered outside the request that causes them.'),
  });

/** The sections `checkReferences` reads: while one of them is itself invalid, its references are not judged. */
const REFERENCED_SECTIONS = new Set<PropertyKey>(['issuer', 'identity', 'roles', 'scopes', 'policies', 'separation', 'scheduler']);

// `when` lets the cross-field rules run although another section (say `listen.port`) is bad,
// so one start reports every bad field rather than revealing them one fix at a time.
export const configSchema = configShape.check(
  z.superRefine(checkReferences, {
    when: ({ issues }) => !issues.some(({ path = [] }) => path.length === 0 || REFERENCED_SECTIONS.has(path[0] as PropertyKey)),
  }),
);
export type BrokerConfig = z.output<typeof configSchema>;

/** Rules across fields: names unique, every reference resolves, roles fit the issuer's kind. */
function checkReferences(c: z.output<typeof configShape>, ctx: z.RefinementCtx): void {
  const issue = (path: (string | number)[], message: string) => ctx.addIssue({ code: 'custom', path, message });

  const issuers = new Map<string, IssuerConfig>();
  const issuerUrls = new Set<string>();
  c.identity.issuers.forEach((issuer, i) => {
    if (issuers.has(issuer.name)) issue(['identity', 'issuers', i, 'name'], `duplicate issuer name "${issuer.name}"`);
    issuers.set(issuer.name, issuer);
    // Tokens are routed to an issuer by `iss`: two entries for one `iss` would let one silently
    // take the other's place, giving a workload a person issuer's roles or the reverse.
    if (issuerUrls.has(issuer.issuer)) issue(['identity', 'issuers', i, 'issuer'], `duplicate issuer "${issuer.issuer}": one entry per iss`);
    issuerUrls.add(issuer.issuer);
    if (issuer.issuer === c.issuer) {
      issue(['identity', 'issuers', i, 'issuer'], 'the broker\'s own issuer can never be a trusted identity issuer');
    }
  });
  const scopes = new Map<string, ScopeConfig>();
  c.scopes.forEach((scope, i) => {
    if (scopes.has(scope.name)) issue(['scopes', i, 'name'], `duplicate scope "${scope.name}"`);
    scopes.set(scope.name, scope);
  });

  const checkMatch = (match: MatchConfig, path: (string | number)[], kind?: 'person') => {
    const issuer = issuers.get(match.issuer);
    if (!issuer) issue([...path, 'issuer'], `no identity issuer is named "${match.issuer}"`);
    else if (kind && issuer.kind !== kind) issue([...path, 'issuer'], `"${match.issuer}" is a ${issuer.kind} issuer; this needs a person issuer`);
  };
  const checkScopeNames = (names: string[], path: (string | number)[]) =>
    names.forEach((name, i) => {
      if (!scopes.has(name)) issue([...path, i], `no scope is named "${name}"`);
    });

  c.roles.forEach((rule, i) => {
    checkMatch(rule.match, ['roles', i, 'match'], rule.role === 'introspector' ? undefined : 'person');
  });
  c.scopes.forEach((scope, i) => {
    if (scope.approvers) checkMatch(scope.approvers, ['scopes', i, 'approvers'], 'person');
  });
  const policyIds = new Set<string>();
  c.policies.forEach((policy, i) => {
    if (policyIds.has(policy.id)) issue(['policies', i, 'id'], `duplicate policy id "${policy.id}"`);
    policyIds.add(policy.id);
    checkMatch(policy.match, ['policies', i, 'match']);
    checkScopeNames(policy.scopes, ['policies', i, 'scopes']);
  });
  c.separation.forEach((rule, i) => checkScopeNames(rule.scopes, ['separation', i, 'scopes']));

  if (cronForInterval(c.scheduler.interval) === undefined) {
    issue(['scheduler', 'interval'], 'must be whole seconds dividing a minute (1s..30s) or whole minutes dividing an hour (1m..60m)');
  }
}

/**
 * node-cron speaks cron, not intervals: an interval maps to a six-field expression only when it
 * divides the minute or the hour evenly, otherwise ticks would bunch at the top of the minute.
 */
export function cronForInterval(intervalMs: number): string | undefined {
  const seconds = intervalMs / 1000;
  if (Number.isInteger(seconds) && seconds >= 1 && seconds < 60 && 60 % seconds === 0) return `*/${seconds} * * * * *`;
  const minutes = seconds / 60;
  if (Number.isInteger(minutes) && minutes >= 1 && minutes < 60 && 60 % minutes === 0) return `0 */${minutes} * * * *`;
  if (minutes === 60) return '0 0 * * * *';
  return undefined;
}
