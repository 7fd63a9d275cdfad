import { z } from 'zod';
import { DETAIL_TYPE, SCOPE_NAME } from '../config/index.js';
import { MAX_IDENTIFIER_BYTES } from '../identity/index.js';
import { detailsWithinBound, objectKey } from '../shared/authorization-details.js';
import { printable, prose, requestText } from '../shared/text-schemas.js';

const scopes = z
  .array(z.string().regex(SCOPE_NAME, 'not a scope name'))
  .min(1)
  .max(32)
  .refine((list) => new Set(list).size === list.length, 'must not repeat a scope');

const detailList = z.array(requestText.detailValue).max(16);

/**
 * CONTRACT section 4, RFC 9396: 1 to 16 entries, each the common fields only. Whether `type` is a
 * configured duty type is the domain's to say, under the configuration running.
 */
export const authorizationDetails = z
  .array(
    z.strictObject({
      type: z.string().regex(DETAIL_TYPE, 'must be a type: printable ASCII without spaces, 256 characters at most'),
      identifier: requestText.detailValue.optional(),
      actions: detailList.optional(),
      locations: detailList.optional(),
      datatypes: detailList.optional(),
      privileges: detailList.optional(),
    }),
  )
  .min(1)
  .max(16)
  .refine(...detailsWithinBound);

/** CONTRACT section 4, the body of `POST /v1/credentials`. */
export const credentialRequestBody = z.strictObject({
  task_id: requestText.taskId,
  scopes,
  audience: requestText.audience,
  // Any positive lifetime is accepted and clamped to what policy allows (CONTRACT section 2).
  ttl_seconds: z.number().int().min(1).optional(),
  justification: requestText.justification.optional(),
  break_glass: z.boolean().default(false),
  authorization_details: authorizationDetails.optional(),
});

/** `/token` and `/complete` take no body: an empty JSON object at most, so a misdirected field is not ignored. */
export const noBody = z.strictObject({});

/** What a route without query parameters takes: none, so a misdirected filter is not ignored. */
export const noQuery = z.strictObject({});

export const revokeBody = z.strictObject({ reason: printable(500) });

export const decisionBody = z.strictObject({
  decision: z.enum(['approve', 'deny']),
  reason: prose(2000).min(1),
  digest: z.string().regex(/^[0-9a-f]{64}$/, 'must be the request\'s 64-character hex digest'),
});

export const reviewBody = z.strictObject({
  outcome: z.enum(['justified', 'unjustified']),
  notes: prose(2000).min(1),
});

/**
 * A whole number in a query: decimal digits and nothing else. `z.coerce` (`Number()`) also took
 * `1e2`, `0x10`, ` 10`, `+10` and `10.0`: a client sending those has a bug it should hear of,
 * and a proxy or cache between it and the broker may read them otherwise. Any other text is
 * left as it is, for `z.number` to refuse with the message naming the range.
 */
const queryInteger = (min: number, max: number) => {
  const message = { message: `must be one whole number from ${min} to ${max}, in decimal digits` };
  return z.preprocess(
    (value) => (typeof value === 'string' && /^[0-9]+$/.test(value) ? Number(value) : value),
    z.number(message).int(message).min(min, message).max(max, message),
  );
};

export const pageQuery = z.strictObject({
  limit: queryInteger(1, 1000).default(100),
  cursor: z.string().max(512).optional(),
});

export const REQUEST_STATUSES = ['pending_approval', 'approved', 'issued', 'denied', 'expired', 'revoked'] as const;

/** `GET /v1/credentials`: the caller's own requests. */
export const ownRequestsQuery = pageQuery.extend({
  status: z.enum(REQUEST_STATUSES).optional(),
});

/** The `{id}` of `/v1/credentials/{id}...`: any text; an unknown id is a 404. */
export const requestIdParams = z.object({ id: z.string().meta({ description: 'The request_id.' }) });

export const breakGlassQuery = pageQuery.extend({ review: z.enum(['pending', 'done']).default('pending') });

export const IDENTITY_TOKEN_TYPES = ['urn:ietf:params:oauth:token-type:jwt', 'urn:ietf:params:oauth:token-type:id_token'] as const;
export const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

/** Form fields of `POST /oauth2/token` (RFC 8693 and the broker's extension parameters). */
export const tokenExchangeForm = z.object({
  grant_type: z.string(),
  subject_token: z.string().min(1, 'subject_token is required'),
  subject_token_type: z.enum([...IDENTITY_TOKEN_TYPES, ACCESS_TOKEN_TYPE], {
    message: `subject_token_type must be ${IDENTITY_TOKEN_TYPES.join(' or ')} (an identity), or ${ACCESS_TOKEN_TYPE} (a broker token, for a child)`,
  }),
  requested_token_type: z
    .literal('urn:ietf:params:oauth:token-type:access_token', {
      message: 'only urn:ietf:params:oauth:token-type:access_token can be issued',
    })
    .optional(),
  scope: z.string().optional(),
  audience: z.string().optional(),
  // RFC 8707: names the audience when `audience` is absent (the token endpoint reconciles the two first).
  resource: z.string().optional(),
  task_id: z.string().optional(),
  // Any positive whole number the JSON API takes (a safe integer): one above the scope's or the
  // rule's maxTtl is clamped to it, however many digits it has.
  ttl_seconds: z
    .string()
    .regex(/^0*[1-9]\d*$/, 'ttl_seconds must be a positive whole number of seconds')
    .transform(Number)
    .refine(Number.isSafeInteger, 'ttl_seconds must be a positive whole number of seconds')
    .optional(),
  justification: z.string().optional(),
  break_glass: z.enum(['true', 'false'], { message: 'break_glass must be true or false' }).optional(),
  request_id: z.string().max(128).optional(),
  // RFC 9396: the JSON array, form-encoded; parsed and checked by the token endpoint.
  authorization_details: z.string().max(16_384).optional(),
  // RFC 9449 section 10: the thumbprint of the key a child token is bound to (a sub-agent's own).
  dpop_jkt: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'dpop_jkt must be a JWK SHA-256 thumbprint (RFC 7638), base64url').optional(),
  // RFC 8693: the agent's own identity, when it acts for the subject (CONTRACT section 1, "Agents").
  actor_token: z.string().min(1).optional(),
  actor_token_type: z
    .enum(IDENTITY_TOKEN_TYPES, { message: `actor_token_type must be ${IDENTITY_TOKEN_TYPES.join(' or ')}` })
    .optional(),
});

/**
 * `POST /oauth2/introspect` (RFC 7662) and `/oauth2/revoke` (RFC 7009): the token, once.
 * Other parameters (`token_type_hint`) are ignored, as both RFCs allow.
 */
export const tokenForm = z.looseObject({
  token: z.string({ message: 'The token parameter is required, once.' }).min(1, 'The token parameter is required, once.'),
  token_type_hint: z.string().optional(),
});

/** The last instant of year 9999: past it, ISO text grows a sign and no longer sorts as time does. */
const LAST_FOUR_DIGIT_YEAR_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

// An offset can carry 9999-12-31T20:00-05:00 into year 10000; events compare times as ISO text.
const instant = z.iso
  .datetime({ offset: true, message: 'must be an ISO 8601 time such as 2026-11-22T10:00:00Z' })
  .transform((text) => Math.min(Date.parse(text), LAST_FOUR_DIGIT_YEAR_MS));

/** An identifier to search for: one that names an object once normalised (entries that name none are found by `type`). */
const objectIdentifier = printable(256).refine((value) => objectKey(value) !== '', 'names no object: it holds only characters that do not show');

/** `GET /v1/audit/issuances` */
export const issuancesQuery = pageQuery.extend({
  since: instant.optional(),
  until: instant.optional(),
  // Any subject the broker records can be searched for (it refuses identities with longer ones).
  subject: printable(MAX_IDENTIFIER_BYTES).optional(),
  scope: z.string().regex(SCOPE_NAME, 'not a scope name').optional(),
  status: z.enum(['issued', 'expired', 'revoked']).optional(),
  break_glass: z.enum(['true', 'false']).transform((v) => v === 'true').optional(),
  type: z.string().regex(DETAIL_TYPE, 'not an authorization_details type').optional(),
  identifier: objectIdentifier.optional(),
  actor: printable(MAX_IDENTIFIER_BYTES).optional(),
  format: z.enum(['json', 'ndjson', 'csv']).default('json'),
});

/** `GET /v1/audit/duties`: one object's chain of custody. */
export const custodyQuery = pageQuery.extend({
  duty: printable(128),
  identifier: objectIdentifier,
});

/** `GET /v1/audit/entitlements`: all rows on one page, so no paging parameters. */
export const entitlementsQuery = z.strictObject({
  since: instant.optional(),
});

/** `GET /v1/audit/events` */
export const eventsQuery = pageQuery.extend({
  since: instant.optional(),
  until: instant.optional(),
  type: printable(64).optional(),
  request_id: printable(128).optional(),
  format: z.enum(['json', 'ndjson']).default('json'),
});

/** `GET /v1/audit/verify` */
export const verifyQuery = z.strictObject({
  // A checkpoint+jwt (compact JWS); its signature is checked by the audit service.
  checkpoint: z.string().min(1).max(4096).regex(/^[\w-]+\.[\w-]+\.[\w-]+$/, 'must be a checkpoint: a compact JWS').optional(),
});

/** `GET /v1/audit/checkpoint` takes no parameters. */
export const checkpointQuery = z.strictObject({});
