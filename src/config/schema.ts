import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';
import ms from 'ms';
import { z } from 'zod';
import { ASYMMETRIC_ALGORITHMS } from '../shared/algorithms.js';
import { isSecureOrLoopback } from '../shared/loopback.js';
import { normalizeName } from '../shared/names.js';

/**
 * The broker's configuration file, CONTRACT section 2. This schema is its reference: every
 * field's `.describe()` text is what the README's configuration table shows
 * (`npm run config:reference` regenerates it; a test fails when they drift).
 * Durations are parsed to milliseconds.
 */

const DURATION_FORMAT = /^\d+(\.\d+)?\s*(ms|s|m|h|d|w)$/;

/**
 * The longest any duration may be: ten years. Every one is added to a time somewhere (a deadline,
 * an expiry, a due date), and a value that passes the schema must not fail there instead: past
 * JavaScript's last date, a request's deadline would be recorded and then fail to be shown.
 */
const LONGEST_DURATION_MS = 3650 * 86_400_000;
/** The longest a timer waits (setTimeout and AbortSignal.timeout take at most 2^31 - 1 ms, then fire at once). */
const LONGEST_TIMER_MS = 24 * 86_400_000;

const duration = (description: string, { atLeast = 1, atMost = LONGEST_DURATION_MS }: { atLeast?: number; atMost?: number } = {}) =>
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
      if (value > atMost) {
        ctx.addIssue({ code: 'custom', message: `"${text}" is longer than ${ms(atMost, { long: true })}` });
        return z.NEVER;
      }
      return value;
    });

/** Token lifetimes are whole seconds (`expires_in`, `exp`): a cap under one second would mint dead tokens. */
const lifetime = (description: string) => duration(description, { atLeast: 1000 });

/** How long one outgoing call may take: a timer's wait. */
const timeout = (description: string) => duration(description, { atMost: LONGEST_TIMER_MS });

/**
 * https everywhere, plain http only to this machine (tests and development). Never a user or
 * password in the URL: URLs end up in logs, proxies and error reports, and fetch refuses them
 * anyway. Messages never repeat the URL, which may be a secret.
 */
const secureUrl = (description: string) =>
  z
    .string()
    .describe(`${description} https, or plain http to a loopback host; no user or password in it.`)
    .superRefine((text, ctx) => {
      const url = URL.parse(text);
      if (!url || !isSecureOrLoopback(url)) {
        ctx.addIssue({ code: 'custom', message: 'must be an https URL (plain http only for loopback hosts)' });
      } else if (url.username !== '' || url.password !== '') {
        ctx.addIssue({ code: 'custom', message: 'must not carry a user or password (a webhook proves itself with secretFile)' });
      }
    });

/**
 * `database`: a SQLite file, or a PostgreSQL URL. Anything that looks like a URL must be a
 * PostgreSQL one, so a typo (`postgress://`) is refused rather than opened as a file of that
 * name. A URL may hold a password: no message here ever repeats it.
 */
const URL_LIKE = /^[a-z][a-z0-9+.-]*:\/\//i;
/** A DNS name: labels of letters, digits and hyphens, 253 characters at most. */
const HOST_NAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i;
const POSTGRES_SCHEMES = new Set(['postgres:', 'postgresql:']);

export type DatabaseEngine = 'sqlite' | 'postgres';

/** Which engine a valid `database` value names. */
export const databaseEngine = (database: string): DatabaseEngine => (URL_LIKE.test(database) ? 'postgres' : 'sqlite');

const databaseSchema = z
  .string()
  .min(1)
  .superRefine((text, ctx) => {
    if (text.trim() !== text || text === '') {
      ctx.addIssue({ code: 'custom', message: 'must not begin or end with white space (a SQLite file path, or a postgres:// URL)' });
      return;
    }
    const scheme = URL_LIKE.exec(text)?.[0].replace(/\/\/$/, '').toLowerCase();
    // `postgres:/user:pw@host` is a typo, not a file name: a file of that name would hold the password in its path.
    if (scheme === undefined && /^postgres(ql)?:/i.test(text)) {
      ctx.addIssue({ code: 'custom', message: 'is not a valid postgres:// URL (postgres:// or postgresql://, then the host)' });
      return;
    }
    if (scheme === undefined) return;
    const url = URL.parse(text);
    if (!POSTGRES_SCHEMES.has(scheme)) {
      ctx.addIssue({ code: 'custom', message: 'a URL here must be postgres:// or postgresql:// (else give a SQLite file path)' });
    } else if (!url) {
      ctx.addIssue({ code: 'custom', message: 'is not a valid postgres:// URL (a password with special characters must be percent-encoded)' });
    } else if (url.hostname === '') {
      ctx.addIssue({ code: 'custom', message: 'a postgres:// URL must name its host' });
    }
  });

export const SIGNING_ALGORITHMS = ['ES256', 'EdDSA', 'RS256'] as const;

/** Asymmetric JWS algorithms an identity issuer may use; `none` and HMAC never verify an identity. */
export const IDENTITY_ALGORITHMS = ASYMMETRIC_ALGORITHMS;

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
  'audit.checkpoint',
] as const;
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number];

export const WEBHOOK_FORMATS = ['json', 'slack'] as const;
export type WebhookFormat = (typeof WEBHOOK_FORMATS)[number];

export const SCOPE_NAME = /^[a-z0-9][a-z0-9:._/-]{0,127}$/;

/**
 * What a `match` compares a claim with: an exact string or glob, or (for a claim holding an
 * object, such as Kubernetes' `kubernetes.io`) a map compared member by member, at any depth.
 * Numbers and booleans become their JSON text, as claims compare as text.
 */
export type ClaimPattern = string | { readonly [name: string]: ClaimPattern };
type ClaimPatternInput = string | number | boolean | { [name: string]: ClaimPatternInput };

const claimPatternSchema: z.ZodType<ClaimPattern, ClaimPatternInput> = z.lazy(() =>
  z
    .union([
      z.string(),
      z.number(),
      z.boolean(),
      z
        .record(z.string().min(1), claimPatternSchema)
        // An empty map would match any object at all, which is never what a rule means to say.
        .refine((map) => Object.keys(map).length > 0, { message: 'an empty map would match any object; name its members' }),
    ])
    // Read as a double, 12345678901234567890 becomes ...7000 and would match other values.
    .refine((value) => typeof value !== 'number' || !Number.isInteger(value) || Number.isSafeInteger(value), {
      message: 'a whole number past 2^53 - 1 loses digits as it is read: write it in quotes, as text',
    })
    .transform((value) => (typeof value === 'object' ? value : String(value))),
);

const matchSchema = z
  .strictObject({
    issuer: z.string().describe('Name of a configured identity issuer.'),
    subject: z.string().optional().describe('The token\'s `sub`: an exact string or a glob where `*` matches any run of characters.'),
    claims: z
      .record(z.string().min(1), claimPatternSchema)
      .optional()
      .describe(
        'Claim name to exact value or glob; a claim holding an array matches when any of its string, number or boolean elements matches; a number or boolean claim matches its JSON text (`true`, `42`). A map as value matches the claim object of that name member by member, at any depth. A key is a claim name, never a path: `kubernetes.io` is one name.',
      ),
  })
  .describe('Which identities a rule applies to; every listed key must match.');
export type MatchConfig = z.output<typeof matchSchema>;

/**
 * A claim in a token: a top-level claim name (dots are part of the name), or a list of names
 * leading into nested claim objects, `[kubernetes.io, pod, uid]`.
 */
export type ClaimPath = string | string[];

const claimPathSchema = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]);

/** The names along a claim path, outermost first. */
export const claimPathNames = (path: ClaimPath): readonly string[] => (typeof path === 'string' ? [path] : path);

/** A path as the configuration writes it: `run_id`, `[kubernetes.io, pod, uid]`. */
const showPath = (path: readonly string[]) => (path.length === 1 ? (path[0] as string) : `[${path.join(', ')}]`);

/** SPIFFE trust domain names: lower-case letters, digits, dots, dashes and underscores (SPIFFE ID spec, section 2.1). */
export const SPIFFE_TRUST_DOMAIN = /^[a-z0-9._-]{1,255}$/;

/**
 * The member a private or secret JWK has and a public one never does (RFC 7518 section 6), if any:
 * an issuer's key set in the configuration holds public keys only, and a private key there is a
 * secret in the wrong place (the broker verifies, it never signs as the issuer).
 */
export const privateJwkMember = (key: Record<string, unknown>): string | undefined =>
  ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'].find((member) => Object.hasOwn(key, member));
export const PRIVATE_JWK_REFUSED = 'holds private or secret key material: give the issuer\'s public keys only';

const jwkSetSchema = z.object({
  keys: z.array(z.record(z.string(), z.unknown()).refine((key) => privateJwkMember(key) === undefined, PRIVATE_JWK_REFUSED)).min(1),
});

const issuerSchema = z
  .strictObject({
    name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,63}$/, 'lower-case letters, digits, - and _').describe('Used in policies and records (`idp`, `client_id`): lower-case letters, digits, `-` and `_`.'),
    kind: z.enum(['workload', 'person']).describe('`workload` (pipelines, jobs, services) or `person` (people from an SSO).'),
    issuer: z
      .string()
      .min(1)
      .optional()
      .describe('The exact `iss` of its tokens, which are routed to it by `iss`. Required unless `spiffeTrustDomain` is given.'),
    spiffeTrustDomain: z
      .string()
      .regex(SPIFFE_TRUST_DOMAIN, 'must be a SPIFFE trust domain: lower-case letters, digits, ., - and _')
      .optional()
      .describe(
        'Workload issuers: a SPIFFE trust domain (`example.org`). Its JWT-SVIDs are routed to it by `sub` (`spiffe://example.org/...`); `iss` may be absent and, when present, must equal `issuer` (with no `issuer`, a token carrying `iss` is refused). Its identities show `iss` as `issuer`, else `spiffe://<trust domain>`. Keys marked `use: jwt-svid` count as signing keys.',
      ),
    jwksUri: secureUrl('Where its public keys are fetched (cached up to 10 minutes, refetched on an unknown `kid` at most every 5 seconds, at most 512 KiB and 100 keys; after a failed fetch its identities are refused for 30 seconds without another try).').optional(),
    jwksFile: z.string().optional().describe('A file holding its JWKS, read at start and again at each reload (SIGHUP). Public keys only: a key with private or secret members is refused.'),
    jwks: jwkSetSchema.optional().describe('Its JWKS inline, public keys only.'),
    dev: z
      .strictObject({ keyDir: z.string().describe('Where the development key pair lives (created on first use).') })
      .optional()
      .describe('DEVELOPMENT ONLY: a local issuer whose tokens `jit dev-token` mints. Never in production.'),
    jwksTimeout: timeout('How long a JWKS fetch may take before the identity is refused.').prefault('5s'),
    audiences: z.array(z.string().min(1)).min(1).describe('Its token\'s `aud` must name one of these.'),
    algorithms: z.array(identityAlgorithm).min(1).describe('Accepted `alg` values: asymmetric only (RS*, PS*, ES*, EdDSA); never none or HMAC.'),
    maxTokenAge: duration('Refuse its tokens older than this, by `iat`.').optional(),
    requiredClaims: z
      .array(claimPathSchema)
      .default([])
      .describe('Claims its tokens must carry, not null nor empty (`sub` and `exp` always are): a claim name, or a list of names for a nested claim (`[kubernetes.io, namespace]`).'),
    initiatorClaim: z
      .string()
      .min(1)
      .optional()
      .describe('Workload issuers: the claim naming the person who started the job. Then required: a token where it is missing, empty or not a string is refused. Its value is that job\'s person (see `people`).'),
    usernameClaim: z
      .string()
      .min(1)
      .optional()
      .describe('Person issuers: the claim naming the person, compared with a workload\'s `initiatorClaim` (see `people`). Then required: a token where it is missing, empty or not a string is refused. Without it, each identity of this issuer is a person of its own (warned at start when the issuer has several `audiences`: an SSO may give one person a `sub` per client).'),
    bindClaims: z
      .array(claimPathSchema)
      .min(1)
      .optional()
      .describe(
        'Workload issuers: claims that tell one job from another of the same `sub` (GitHub `run_id` and `run_attempt`, GitLab `pipeline_id`, a pod\'s `[kubernetes.io, pod, uid]`). A request belongs to the job that made it: only an identity with the same issuer, subject and these values may see or use it. Required in every token: string, number or boolean values, a number an integer of at most 2^53 - 1 either way (past it, or with a fraction, two values may parse to one).',
      ),
  })
  .superRefine((issuer, ctx) => {
    const issue = (path: PropertyKey[], message: string) => ctx.addIssue({ code: 'custom', path, message });
    const sources = (['jwksUri', 'jwksFile', 'jwks', 'dev'] as const).filter((key) => issuer[key] !== undefined);
    if (sources.length !== 1) issue([], 'needs exactly one of jwksUri, jwksFile, jwks, dev');
    if (issuer.issuer === undefined && issuer.spiffeTrustDomain === undefined) issue(['issuer'], 'required (unless spiffeTrustDomain names a SPIFFE trust domain)');
    if (issuer.spiffeTrustDomain !== undefined && issuer.kind !== 'workload') {
      issue(['spiffeTrustDomain'], 'a SPIFFE trust domain names workloads: only workload issuers have one');
    }
    if (issuer.dev !== undefined && issuer.spiffeTrustDomain !== undefined) issue(['dev'], 'a dev issuer is not a SPIFFE issuer');
    if (issuer.dev !== undefined && !issuer.algorithms.includes(DEV_ISSUER_ALGORITHM)) {
      issue(['algorithms'], `a dev issuer signs with ${DEV_ISSUER_ALGORITHM}; list it`);
    }
    if (issuer.initiatorClaim !== undefined && issuer.kind !== 'workload') issue(['initiatorClaim'], 'only workload issuers have an initiatorClaim');
    if (issuer.bindClaims !== undefined && issuer.kind !== 'workload') issue(['bindClaims'], 'only workload issuers have bindClaims');
    if (issuer.usernameClaim !== undefined && issuer.kind !== 'person') issue(['usernameClaim'], 'only person issuers have a usernameClaim');
    // A claim cannot be both a value to bind and an object holding another: no token could satisfy both.
    const bound = (issuer.bindClaims ?? []).map(claimPathNames);
    if (bound.some((path) => path.length === 0 || path.includes(''))) return; // already refused, path by path
    const within = (outer: readonly string[], inner: readonly string[]) => outer.every((name, k) => inner[k] === name);
    bound.forEach((path, i) => {
      const earlier = bound.slice(0, i).find((other) => within(other, path) || within(path, other));
      if (earlier === undefined) return;
      const [outer, inner] = earlier.length <= path.length ? [earlier, path] : [path, earlier];
      issue(['bindClaims', i], outer.length === inner.length ? `${showPath(path)} is listed twice` : `${showPath(inner)} lies inside ${showPath(outer)}, which is bound as a value`);
    });
  });
export type IssuerConfig = z.output<typeof issuerSchema>;

const scopeSchema = z
  .strictObject({
    name: z.string().regex(SCOPE_NAME, 'must match [a-z0-9][a-z0-9:._/-]{0,127}').describe('The scope string: lower-case letters, digits and `:._/-`, starting with a letter or digit, 128 at most.'),
    risk: z.enum(['low', 'high']).describe('`low` is issued at once; `high` needs approval (or break-glass).'),
    maxTtl: lifetime('Longest lifetime of a token holding this scope.'),
    approvals: z.number().int().min(1).max(10).optional().describe('High risk: how many distinct approvers must approve (default 1).'),
    approvers: matchSchema.optional().describe('High risk: narrows who may approve, beyond the `approver` role.'),
    requireDpop: z
      .boolean()
      .default(false)
      .describe('A token holding this scope is always DPoP-bound (RFC 9449): a request for it without a valid proof is refused, and a request that waits needs a proof by the same key to be collected.'),
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

/** An RFC 9396 `authorization_details` type: printable ASCII, no space (a word or a URI). */
export const DETAIL_TYPE = /^[\x21-\x7e]{1,256}$/;

const policySchema = z.strictObject({
  id: z.string().min(1).max(128).describe('Names the policy in records.'),
  match: matchSchema,
  scopes: z.array(z.string()).min(1).describe('Scopes this policy grants to the matching identities.'),
  audiences: z.array(z.string().min(1)).min(1).optional().describe('Audiences those scopes may be requested for (default: any).'),
  maxTtl: lifetime('Caps the scopes\' `maxTtl` under this policy. Policies add up: where several grant one scope, the largest of their caps applies.').optional(),
  identifiers: z
    .record(z.string(), z.array(z.string().min(1)).min(1))
    .optional()
    .describe(
      'An `authorization_details` type (one a duty names) to identifier globs, `{model: ["fraud-*"]}`: the policy then grants its scopes only to a request naming at least one entry of each listed type, and only when every entry of that type has an `identifier` matching one of its globs, exactly as sent.',
    ),
});

const dutySchema = z.strictObject({
  name: z.string().min(1).max(128).describe('Names the duty in refusals and in the chain of custody (`/v1/audit/duties`).'),
  type: z
    .string()
    .regex(DETAIL_TYPE, 'printable ASCII without spaces, 256 characters at most')
    .describe('The `authorization_details` type whose entries name the object (`model`): a request for a step scope names its objects by `identifier`. One duty per type.'),
  steps: z
    .array(
      z.strictObject({
        name: z.string().min(1).max(64).describe('Names the step.'),
        scopes: z.array(z.string()).min(1).describe('The scopes that are this step; a scope belongs to at most one step of all duties.'),
        formerly: z
          .array(z.string().min(1).max(64))
          .prefault([])
          .describe('Names this step had before a rename: participations recorded under them count as this step, so whoever took part in it under an old name may still repeat it.'),
      }),
    )
    .min(2, 'a duty separates steps: name at least two')
    .describe('The lifecycle steps of the object, each a set of scopes.'),
  within: duration('How long taking part in a step binds, counted from a grant\'s end (default: always).').optional(),
});
export type DutyConfig = z.output<typeof dutySchema>;

const delegationRuleSchema = z.strictObject({
  id: z.string().min(1).max(128).describe('Names the rule in refusals and records.'),
  actor: matchSchema.describe('Who may act: the agent\'s identity (`actor_token`).'),
  for: matchSchema.describe('For whom: the principal\'s identity (`subject_token`), a person or a pipeline.'),
  scopes: z
    .array(z.string())
    .min(1)
    .describe('What the actor may ask for on the principal\'s behalf: each scope must also be granted to the principal by its own policies.'),
  maxTtl: lifetime('Caps the lifetime of tokens this rule allows (a longer `ttl_seconds` is clamped).').optional(),
});
export type DelegationRuleConfig = z.output<typeof delegationRuleSchema>;
export type PolicyConfig = z.output<typeof policySchema>;

const configShape = z
  .strictObject({
    issuer: z
      .url({ protocol: /^https?$/ })
      // RFC 8414 section 2: no query or fragment. Endpoints, the JWKS URL and DPoP's `htu` are this plus a path.
      .refine((url) => !/[?#\s]/.test(url), 'must be a URL without a query, a fragment or white space (RFC 8414 section 2)')
      .describe('The broker\'s own `iss` and public base URL. Never one of the trusted identity issuers. Restart-only: a reload that changes it is refused.'),
    listen: z
      .strictObject({
        host: z
          .string()
          .refine((host) => isIP(host) !== 0 || HOST_NAME.test(host), 'must be an IP address or a host name')
          .default('127.0.0.1')
          .describe('Interface to listen on (env HOST overrides).'),
        port: z.number().int().min(0).max(65535).default(8080).describe('TCP port (env PORT overrides).'),
        workers: z
          .union([z.literal('auto'), z.number().int().min(1).max(64)])
          .default('auto')
          .transform((workers) => (workers === 'auto' ? availableParallelism() : workers))
          .describe(
            'Worker processes sharing the port, each a whole broker with its own database connection. `auto` runs one per core this process may use (`os.availableParallelism()`; a container\'s CPU quota is not seen: set a number there). Every check stays atomic across them, as across replicas.',
          ),
        requestTimeout: duration(
          'How long a client may take to send one whole request, headers and body: a slower one (or a connection that sends nothing) is closed, so that no caller holds connections open by trickling bytes. Answers may take longer (exports stream for as long as they need). At least 1s.',
          { atLeast: 1_000, atMost: LONGEST_TIMER_MS },
        ).prefault('20s'),
      })
      .prefault({})
      .describe('Where the HTTP API listens. Restart-only: a reload that changes it is refused.'),
    database: databaseSchema
      .default('./data/broker.db')
      .describe(
        'A SQLite file path (the embedded default; relative paths are from the working directory), or a `postgres://` / `postgresql://` URL (`postgres://user@host:5432/db`) for several broker replicas on several machines. Env BROKER_DB overrides. A URL may carry a password; it is never logged. Restart-only: a reload that changes it is refused.',
      ),
    clockSkew: duration('How far an identity token\'s `nbf` or `iat` may lie ahead of the broker\'s clock (an `exp` already past is never forgiven); also the window of DPoP proofs\' `iat` and the `nbf` backdating of minted tokens.').prefault('30s'),
    scheduler: z
      .strictObject({
        interval: duration('How often the expiry, review and key jobs run: whole seconds dividing a minute, or whole minutes dividing an hour.').prefault('10s'),
      })
      .prefault({})
      .describe('The in-process jobs: expiry, overdue reviews, key rotation. Restart-only: a reload that changes it is refused.'),
    signing: z
      .strictObject({
        algorithm: z.enum(SIGNING_ALGORITHMS).default('ES256').describe('Algorithm of the tokens the broker mints.'),
        keyDir: z
          .string()
          .default('./data/keys')
          .describe(
            'Private signing keys as files, mode 0600, created on first start, where no key-encryption key is given (SQLite only): each key directory holds keys of its own: processes sharing one (the workers of one machine) sign with the same key, processes on separate directories each with theirs. With a key-encryption key nothing is written here; a key file found here for a key the database lists is sealed into the database at start (an upgrade).',
          ),
        keyEncryptionKeyFile: z
          .string()
          .optional()
          .describe(
            'A file (mode 0600) holding the key-encryption key: base64 of 32 random bytes (`openssl rand -base64 32`). Or give it in env BROKER_KEY_ENCRYPTION_KEY; never both, and there is no default. With one, each private signing key is kept in the database sealed with AES-256-GCM under it (the database never holds the key-encryption key), and every replica signs with the cluster\'s current key: a replica that joins is ready at once. Required on PostgreSQL, the same on every replica. While it is rotated, several separated by commas or line breaks: the first seals, every one opens.',
          ),
        rotateEvery: duration('A new signing key after this long; old keys stay in the JWKS until their tokens expire.').prefault('24h'),
        publishAhead: duration(
          'A new signing key is in the JWKS this long before any token is signed with it, so resource servers that cached the JWKS still verify every token. Shorter than `rotateEvery`.',
        ).prefault('10m'),
      })
      .prefault({})
      .superRefine((signing, ctx) => {
        // A key published as long ahead as keys rotate would never be the one in use.
        if (signing.publishAhead >= signing.rotateEvery) {
          ctx.addIssue({ code: 'custom', path: ['publishAhead'], message: 'must be shorter than rotateEvery (publishAhead is 10m unless set)' });
        }
      })
      .describe('The keys the broker signs its tokens with. Restart-only: a reload that changes it is refused.'),
    identity: z
      .strictObject({
        issuers: z.array(issuerSchema).min(1).describe('The identity issuers the broker trusts.'),
      })
      .describe('Who may call the broker: every caller proves itself with a token from one of these.'),
    people: z
      .array(
        z.strictObject({
          name: z.string().min(1).describe('The person, as separation of duties counts them. Compared after normalisation (Unicode NFKC, full case folding, white space, control, invisible and filler characters removed).'),
          aliases: z
            .array(
              z.strictObject({
                issuer: z.string().describe('Name of an identity issuer with a `usernameClaim` (person) or an `initiatorClaim` (workload).'),
                username: z.string().min(1).describe('The value of that claim for this person, compared after the same normalisation.'),
              }),
            )
            .min(1)
            .describe('Usernames of this person at the issuers; each (issuer, username) names one person only.'),
        }),
      )
      .prefault([])
      .describe(
        'One person\'s usernames across issuers, so that `bob-gh` at `github` and `bob@acme.com` at `okta` are one person for every restriction (who may not approve, distinct approvers, quotas, separation). Never grants anything.',
      ),
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
    duties: z
      .array(dutySchema)
      .prefault([])
      .describe(
        'Separation of duties across the lifecycle of one object: whoever took part in one step for an object (requester and its person, the job\'s initiator, each actor, each approver) may not take part in another step for the same object.',
      ),
    dpop: z
      .strictObject({
        algorithms: z
          .array(z.enum(ASYMMETRIC_ALGORITHMS))
          .min(1)
          .default(['ES256', 'EdDSA'])
          .describe('Proof algorithms accepted (asymmetric only; never none, never an HMAC).'),
      })
      .prefault({})
      .describe(
        'Sender-constrained tokens (RFC 9449): a `DPoP` proof on a request that returns a token binds the token to the proof\'s key (`cnf.jkt`, `token_type: DPoP`); a copied token is useless without that key. Proof `jti`s are remembered for `clockSkew`, on every replica.',
      ),
    delegation: z
      .strictObject({
        maxDepth: z.number().int().min(1).max(8).default(1).describe('Actors in one `act` chain at most: an agent handing a sub-task to another agent adds one.'),
        rules: z.array(delegationRuleSchema).prefault([]).describe('Which actors may act for which principals, for which scopes. Default deny: without a rule, no actor acts for anyone.'),
      })
      .prefault({})
      .describe(
        'Agents acting for a principal (RFC 8693 `actor_token` at `/oauth2/token`): the token stays the principal\'s, narrowed to the rule, and names the actor chain in `act`; the principal and every actor count as requesters.',
      ),
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
        requestsPerMinute: z.number().int().positive().default(600).describe('Credential requests (issued, pending or refused) per identity and per person in any minute.'),
        liveGrants: z.number().int().positive().default(1000).describe('Pending, approved and issued grants an identity or a person holds at once.'),
        pendingRequests: z.number().int().positive().default(20).describe('Requests awaiting approval an identity or a person holds at once.'),
      })
      .prefault({})
      .describe('Per identity and per person; over a limit: 429 `rate_limited` with `Retry-After`.'),
    notify: z
      .strictObject({
        timeout: timeout('How long one webhook delivery attempt may take.').prefault('5s'),
        retries: z.number().int().min(0).max(10).default(3).describe('Further attempts after a failed delivery, with backoff (1 s, then four times longer each time). A process holds at most 1,000 deliveries at once for one receiver (one down for hours): past that a new one to it fails at once, audited as `notify.failed` with `problem: backlog`, while every other receiver is still served. It sends one receiver at most 4 at once; the others wait their turn, so a slow receiver holds a few connections, not one per event.'),
        webhooks: z
          .array(
            z.strictObject({
              url: secureUrl('Receives a JSON POST per event. Treated as a secret: only its origin is ever logged.'),
              events: z.array(z.enum(WEBHOOK_EVENTS)).min(1).describe('Which events it receives.'),
              format: z
                .enum(WEBHOOK_FORMATS)
                .default('json')
                .describe('`json`: the event body of the contract; `slack`: a Slack-compatible message (`text`, `blocks`).'),
              secretFile: z
                .string()
                .optional()
                .describe(
                  'A file (mode 0600) holding a Standard Webhooks secret, `whsec_` and base64 of at least 24 bytes, read at start and again at each reload (SIGHUP). Each delivery is then signed in a `webhook-signature` header, so the receiver can tell the broker from a forger.',
                ),
            }),
          )
          .prefault([]),
      })
      .prefault({})
      .describe('Webhooks, delivered outside the request that causes them.'),
    audit: z
      .strictObject({
        checkpointEvery: duration('How often the broker signs a checkpoint of the audit chain head (`audit.checkpoint` event and webhook).').prefault('1h'),
      })
      .prefault({})
      .describe('The audit log. Restart-only: a reload that changes it is refused.'),
    console: z
      .strictObject({
        issuer: z.string().describe('Name of the person issuer people sign in with (OpenID Connect, authorization code with PKCE).'),
        clientId: z
          .string()
          .min(1)
          .describe(
            'The console\'s client id at that issuer: a public client (no secret) allowed the authorization code grant with PKCE, its redirect URI `<issuer>/console/callback` (the broker\'s `issuer`). Its ID tokens name it in `aud`, so it must be one of the issuer\'s `audiences`.',
          ),
        cliClientId: z
          .string()
          .min(1)
          .optional()
          .describe(
            '`jit login`\'s client id, when not `clientId`: a public native client whose redirect URI is `http://127.0.0.1/callback` on any port (RFC 8252). Also one of the issuer\'s `audiences`.',
          ),
        scopes: z
          .array(z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, 'an OAuth scope: printable ASCII, no space, quote or backslash'))
          .min(1)
          .default(['openid', 'profile', 'email'])
          .refine((scopes) => scopes.includes('openid'), 'must include openid')
          .describe('Scopes asked for at sign-in: `openid`, and whatever makes the issuer put the claims the `roles` rules read (such as `groups`) into the ID token.'),
        discoveryUrl: secureUrl('The issuer\'s OpenID Connect discovery document (default: `<its issuer>/.well-known/openid-configuration`). The broker reads the endpoints from it, and `jit login` is told where it is.').optional(),
        devSignIn: z
          .boolean()
          .default(false)
          .describe(
            'DEVELOPMENT ONLY: the broker itself signs people in as the dev issuer (a page where you choose who you are). Refused unless `issuer` names a `dev:` issuer; the broker warns at start. Never in production.',
          ),
      })
      .optional()
      .describe('The web console at `/console`, for people: who signs in, and where. Without it the console says it is not configured. Restart-only: a reload that changes it is refused.'),
    policyTests: z
      .string()
      .min(1)
      .optional()
      .describe(
        'A policy cases file (YAML, `cases: [...]`, see `jit policy test`), relative to this configuration file: requests and the answers this configuration must give them. A start, `--check-config` and a reload (SIGHUP) run it with the broker\'s own rules and refuse this configuration, naming the case, when one fails or the file is invalid.',
      ),
  });

/** The sections `checkReferences` reads: while one of them is itself invalid, its references are not judged. */
const REFERENCED_SECTIONS = new Set<PropertyKey>(['issuer', 'identity', 'people', 'roles', 'scopes', 'policies', 'separation', 'duties', 'delegation', 'scheduler', 'console']);

// `when` lets the cross-field rules run although another section (say `listen.port`) is bad,
// so one start reports every bad field rather than revealing them one fix at a time.
export const configSchema = configShape.check(
  z.superRefine(checkReferences, {
    when: ({ issues }) => !issues.some(({ path = [] }) => path.length === 0 || REFERENCED_SECTIONS.has(path[0] as PropertyKey)),
  }),
);
export type BrokerConfig = z.output<typeof configSchema>;
export type PeopleConfig = BrokerConfig['people'];
export type PersonConfig = PeopleConfig[number];
export type LimitsConfig = BrokerConfig['limits'];
export type AuditConfig = BrokerConfig['audit'];
export type SigningConfig = BrokerConfig['signing'];
export type WebhookConfig = BrokerConfig['notify']['webhooks'][number];
export type ConsoleConfig = NonNullable<BrokerConfig['console']>;

/** Rules across fields: names unique, every reference resolves, roles fit the issuer's kind. */
function checkReferences(c: z.output<typeof configShape>, ctx: z.RefinementCtx): void {
  const issue = (path: (string | number)[], message: string) => ctx.addIssue({ code: 'custom', path, message });

  const issuers = new Map<string, IssuerConfig>();
  const issuerUrls = new Map<string, string>();
  const trustDomains = new Map<string, string>();
  const brokerUrl = normalizeIssuerUrl(c.issuer);
  c.identity.issuers.forEach((issuer, i) => {
    const at = (field: string) => ['identity', 'issuers', i, field];
    if (issuers.has(issuer.name)) issue(at('name'), `duplicate issuer name "${issuer.name}"`);
    issuers.set(issuer.name, issuer);
    // Tokens are routed to an issuer by `iss`, and identities told apart by it: two entries for one
    // `iss` (or for two spellings of one URL) would let one take the other's place, giving a
    // workload a person issuer's roles, or making two issuers' subjects one identity.
    const iss = issuerIss(issuer);
    const field = issuer.issuer !== undefined ? 'issuer' : 'spiffeTrustDomain';
    const holder = issuerUrls.get(normalizeIssuerUrl(iss));
    if (holder !== undefined) {
      issue(at(field), `duplicate issuer "${iss}": the same URL as issuer "${holder}" (letter case, default port, a trailing dot or slash and escaped unreserved characters aside); one entry per iss`);
    }
    issuerUrls.set(normalizeIssuerUrl(iss), issuer.name);
    if (normalizeIssuerUrl(iss) === brokerUrl) issue(at(field), 'the broker\'s own issuer can never be a trusted identity issuer');
    // SPIFFE tokens are routed by the trust domain of their `sub`: it must name one issuer.
    if (issuer.spiffeTrustDomain !== undefined) {
      const owner = trustDomains.get(issuer.spiffeTrustDomain);
      if (owner !== undefined) issue(at('spiffeTrustDomain'), `trust domain "${issuer.spiffeTrustDomain}" is already issuer "${owner}"'s; one issuer per trust domain`);
      trustDomains.set(issuer.spiffeTrustDomain, issuer.name);
    }
  });
  checkPeople(c, issuers, issue);
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
  checkDuties(c, issue, checkScopeNames);
  const ruleIds = new Set<string>();
  c.delegation.rules.forEach((rule, i) => {
    if (ruleIds.has(rule.id)) issue(['delegation', 'rules', i, 'id'], `duplicate delegation rule "${rule.id}"`);
    ruleIds.add(rule.id);
    checkMatch(rule.actor, ['delegation', 'rules', i, 'actor']);
    checkMatch(rule.for, ['delegation', 'rules', i, 'for']);
    checkScopeNames(rule.scopes, ['delegation', 'rules', i, 'scopes']);
  });

  if (c.console) checkConsole(c.console, issuers, issue);

  if (cronForInterval(c.scheduler.interval) === undefined) {
    issue(['scheduler', 'interval'], 'must be whole seconds dividing a minute (1s..30s) or whole minutes dividing an hour (1m..60m)');
  }
}

/**
 * `duties` and the policies' `identifiers`: a scope is one step of one duty at most (else which
 * step a request took part in would depend on which entry was read first), one duty per object
 * type, and `identifiers` name types a duty knows (a type no duty has names no object).
 */
function checkDuties(
  c: z.output<typeof configShape>,
  issue: (path: (string | number)[], message: string) => void,
  checkScopeNames: (names: string[], path: (string | number)[]) => void,
): void {
  const names = new Map<string, number>();
  const types = new Map<string, number>();
  const stepOf = new Map<string, string>();
  c.duties.forEach((duty, d) => {
    if (names.has(duty.name)) issue(['duties', d, 'name'], `duplicate duty "${duty.name}"`);
    names.set(duty.name, d);
    const owner = types.get(duty.type);
    if (owner !== undefined) issue(['duties', d, 'type'], `type "${duty.type}" is already duties.${owner}'s; one duty per type`);
    types.set(duty.type, d);
    const steps = new Set<string>();
    duty.steps.forEach((step, s) => {
      if (steps.has(step.name)) issue(['duties', d, 'steps', s, 'name'], `duplicate step "${step.name}" in duty "${duty.name}"`);
      steps.add(step.name);
    });
    // A name stands for one step: a former name is no step's current name, nor two steps' former one.
    const former = new Set<string>();
    duty.steps.forEach((step, s) => {
      step.formerly.forEach((name, k) => {
        if (steps.has(name) || former.has(name)) issue(['duties', d, 'steps', s, 'formerly', k], `"${name}" already names a step of duty "${duty.name}"`);
        former.add(name);
      });
    });
    duty.steps.forEach((step, s) => {
      checkScopeNames(step.scopes, ['duties', d, 'steps', s, 'scopes']);
      step.scopes.forEach((scope, k) => {
        const taken = stepOf.get(scope);
        if (taken !== undefined) issue(['duties', d, 'steps', s, 'scopes', k], `scope "${scope}" is already step ${taken}; a scope belongs to one step of one duty`);
        stepOf.set(scope, `"${step.name}" of duty "${duty.name}"`);
      });
    });
  });
  c.policies.forEach((policy, p) => {
    for (const type of Object.keys(policy.identifiers ?? {})) {
      if (!types.has(type)) issue(['policies', p, 'identifiers', type], `no duty has the type "${type}"`);
    }
  });
}

/**
 * `console`: people sign in at a person issuer whose ID tokens the broker accepts (their `aud`
 * is the client id), and the development sign-in only ever signs for a development issuer, so a
 * production configuration cannot turn it on by accident.
 */
function checkConsole(
  web: ConsoleConfig,
  issuers: ReadonlyMap<string, IssuerConfig>,
  issue: (path: (string | number)[], message: string) => void,
): void {
  const issuer = issuers.get(web.issuer);
  if (!issuer) return issue(['console', 'issuer'], `no identity issuer is named "${web.issuer}"`);
  if (issuer.kind !== 'person') return issue(['console', 'issuer'], `"${web.issuer}" is a workload issuer; people sign in with a person issuer`);
  for (const field of ['clientId', 'cliClientId'] as const) {
    const clientId = web[field];
    if (clientId !== undefined && !issuer.audiences.includes(clientId)) {
      issue(['console', field], `"${clientId}" is not one of issuer "${issuer.name}"'s audiences, so its ID tokens would be refused; add it there`);
    }
  }
  if (web.devSignIn && !issuer.dev) {
    issue(['console', 'devSignIn'], `DEVELOPMENT ONLY: the development sign-in signs only for a dev: issuer, and "${issuer.name}" is a real one`);
  }
  if (!web.devSignIn && issuer.dev) {
    issue(['console', 'issuer'], `"${issuer.name}" is a dev: issuer, which has no sign-in page of its own; set devSignIn: true (development only) or name a real issuer`);
  }
  if (web.devSignIn && web.discoveryUrl !== undefined) {
    issue(['console', 'discoveryUrl'], 'the development sign-in is its own discovery document; leave discoveryUrl out');
  }
}

/**
 * `people`: every alias must be able to apply, and name one person only. An alias that could
 * never apply is refused rather than ignored, as whoever wrote it believes two names are one
 * person; a username given to two people would make the key depend on which entry won.
 */
function checkPeople(
  c: z.output<typeof configShape>,
  issuers: ReadonlyMap<string, IssuerConfig>,
  issue: (path: (string | number)[], message: string) => void,
): void {
  const names = new Map<string, number>();
  const owners = new Map<string, number>();
  c.people.forEach((person, p) => {
    const name = normalizeName(person.name);
    if (name === '') issue(['people', p, 'name'], 'nothing is left of it once white space, control and invisible characters are removed');
    else if (names.has(name)) issue(['people', p, 'name'], `"${person.name}" is the name of people.${names.get(name)}, once normalised; list each person once`);
    else names.set(name, p);

    person.aliases.forEach((alias, a) => {
      const at = (field: string) => ['people', p, 'aliases', a, field];
      const issuer = issuers.get(alias.issuer);
      if (!issuer) return issue(at('issuer'), `no identity issuer is named "${alias.issuer}"`);
      if (issuer.kind === 'person' && issuer.usernameClaim === undefined) {
        issue(at('issuer'), `person issuer "${alias.issuer}" has no usernameClaim, so no alias on it could ever apply`);
      }
      if (issuer.kind === 'workload' && issuer.initiatorClaim === undefined) {
        issue(at('issuer'), `workload issuer "${alias.issuer}" has no initiatorClaim, so no alias on it could ever apply`);
      }
      const username = normalizeName(alias.username);
      if (username === '') return issue(at('username'), 'nothing is left of it once white space, control and invisible characters are removed');
      const key = `${alias.issuer}\u0000${username}`;
      const owner = owners.get(key);
      if (owner !== undefined && owner !== p) {
        issue(at('username'), `"${alias.username}" at "${alias.issuer}" is already an alias of people.${owner} ("${c.people[owner]?.name}"); one username names one person`);
      } else owners.set(key, p);
    });
  });
}

/**
 * The form in which issuer URLs are compared for uniqueness: scheme and host in lower case, the
 * host without the root's trailing dot, no default port (the URL parser drops :443 for https and
 * :80 for http), unreserved characters of the path decoded (RFC 3986 6.2.2.2: `%7E` is `~`),
 * no trailing slash. A value that is not a URL is compared as it is.
 */
export function normalizeIssuerUrl(text: string): string {
  const url = URL.parse(text);
  if (!url || url.host === '') return text;
  const path = url.pathname
    .replace(/%([0-9a-f]{2})/gi, (escape: string, hex: string) => {
      const char = String.fromCharCode(Number.parseInt(hex, 16));
      return /[A-Za-z0-9\-._~]/.test(char) ? char : escape.toUpperCase();
    })
    .replace(/\/+$/, '');
  const host = url.hostname.toLowerCase().replace(/\.$/, '') + (url.port === '' ? '' : `:${url.port}`);
  const userinfo = url.username === '' ? '' : `${url.username}${url.password === '' ? '' : `:${url.password}`}@`;
  return `${url.protocol}//${userinfo}${host}${path}${url.search}${url.hash}`;
}

/** The `iss` its identities show: the configured `issuer`, else `spiffe://<trust domain>`. */
export const issuerIss = (issuer: Pick<IssuerConfig, 'issuer' | 'spiffeTrustDomain'>): string =>
  issuer.issuer ?? `spiffe://${issuer.spiffeTrustDomain}`;

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
