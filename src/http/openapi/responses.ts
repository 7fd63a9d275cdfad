import { z } from 'zod';
import { authorizationDetails, REQUEST_STATUSES } from '../schemas.js';

/**
 * What the broker answers, as zod schemas: the OpenAPI document is generated from these, and the
 * document's test checks real answers against them. Field sets follow CONTRACT section 4 and the
 * views that build them (requests/view.ts, audit/service.ts).
 */

/** RFC 8693 section 4.1: the current actor outermost, earlier actors nested under `act`. */
type Act = { iss: string; sub: string; act?: Act };
const act: z.ZodType<Act> = z
  .lazy(() => z.object({ iss: z.string(), sub: z.string(), act: act.optional() }))
  .meta({ id: 'ActorChain', description: 'Who acts for the requester (RFC 8693 `act`): the current actor, earlier actors nested under `act`.' });

const instant = z.string().meta({ format: 'date-time', description: 'ISO 8601 UTC time.', example: '2026-12-01T10:00:00.000Z' });

export const principal = z
  .object({
    iss: z.string().meta({ description: 'The issuer URL exactly as in the identity token.' }),
    sub: z.string(),
  })
  .meta({ id: 'Identity', description: 'An identity: issuer and subject.' });

/** An identity or null: a union, as `.nullable()` on a named schema generates a type that refuses null. */
const principalOrNull = z.union([principal, z.null()]);

export const problem = z
  .looseObject({
    type: z.string().meta({ description: 'urn:jit-broker:problem:<invalid_request|invalid_token|policy_denied|separation_of_duties|not_found|conflict|rate_limited|unavailable>' }),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    errors: z
      .array(z.object({ pointer: z.string(), detail: z.string() }))
      .optional()
      .meta({ description: 'A 400 from validation: each bad field, as a JSON pointer.' }),
  })
  .meta({ id: 'Problem', description: 'RFC 9457 problem details (`application/problem+json`).' });

export const oauthError = z
  .looseObject({
    error: z.string().meta({ description: 'A registered OAuth error code.' }),
    error_description: z.string().optional(),
    request_id: z.string().optional().meta({ description: 'With `authorization_pending`: the request to collect once approved.' }),
  })
  .meta({ id: 'OAuthError', description: 'RFC 6749 section 5.2 error.' });

/** `DPoP` for a token bound to its holder's key (RFC 9449), else `Bearer`. */
const tokenType = z.enum(['Bearer', 'DPoP']);

export const issuedCredential = z
  .object({
    request_id: z.string(),
    status: z.literal('issued'),
    access_token: z.string().meta({ description: 'An RFC 9068 JWT access token. Never stored, never logged.' }),
    token_type: tokenType,
    expires_in: z.number().int(),
    expires_at: instant,
    scopes: z.array(z.string()),
    audience: z.string(),
    break_glass: z.boolean(),
    authorization_details: authorizationDetails.optional().meta({ description: 'RFC 9396: the objects the request names (duties follow them).' }),
  })
  .meta({ id: 'IssuedCredential' });

export const pendingCredential = z
  .object({
    request_id: z.string(),
    status: z.literal('pending_approval'),
    approvals_required: z.number().int(),
    approvals: z.array(z.unknown()).max(0).meta({ description: 'Empty: no decision yet.' }),
    digest: z.string().meta({ description: 'SHA-256 (hex) of what the request asks; approvers echo it.' }),
    expires_at: instant,
    act: act.optional(),
    authorization_details: authorizationDetails.optional().meta({ description: 'RFC 9396: the objects the request names (duties follow them).' }),
  })
  .meta({ id: 'PendingCredential' });

const review = z.object({
  status: z.enum(['pending', 'done']),
  due_at: instant,
  overdue: z.boolean(),
  outcome: z.enum(['justified', 'unjustified']).optional(),
  notes: z.string().nullable().optional(),
  reviewer: principalOrNull.optional(),
  reviewed_at: instant.optional(),
});

export const credentialRequest = z
  .object({
    request_id: z.string(),
    status: z.enum(REQUEST_STATUSES),
    requester: principal,
    initiator: z.string().optional().meta({ description: 'Who started the requesting job (the issuer\'s `initiatorClaim`).' }),
    bound_claims: z.record(z.string(), z.unknown()).optional().meta({ description: 'The job the request is bound to (the issuer\'s `bindClaims`).' }),
    task_id: z.string(),
    scopes: z.array(z.string()),
    audience: z.string(),
    ttl_seconds: z.number().int(),
    justification: z.string().nullable(),
    break_glass: z.boolean(),
    authorization_details: authorizationDetails.optional().meta({ description: 'RFC 9396: the objects the request names (duties follow them).' }),
    act: act.optional(),
    parent_id: z.string().optional().meta({ description: 'A child token\'s parent request.' }),
    digest: z.string(),
    approvals_required: z.number().int(),
    approvals: z.array(
      z.object({ iss: z.string(), sub: z.string(), decision: z.enum(['approve', 'deny']), reason: z.string(), at: instant }),
    ),
    created_at: instant,
    expires_at: instant,
    issued_at: instant.optional(),
    jti: z.string().optional(),
    ended_at: instant.optional(),
    revoke_reason: z.string().optional(),
    revoked_by: principalOrNull.optional(),
    review: review.optional().meta({ description: 'Break-glass grants: the post-review.' }),
  })
  .meta({ id: 'CredentialRequest', description: 'A credential request as its requester, approvers and auditors see it.' });

/** `{items, next_cursor}`: every listing. */
export const page = <T extends z.ZodType>(item: T, id: string) =>
  z
    .object({
      items: z.array(item),
      next_cursor: z.string().nullable().meta({ description: 'Pass as `cursor` for the next page; null at the end.' }),
    })
    .meta({ id });

export const issuanceRow = z
  .object({
    jti: z.string(),
    request_id: z.string(),
    requester: principal,
    task_id: z.string(),
    scopes: z.array(z.string()),
    audience: z.string(),
    justification: z.string().nullable(),
    issued_at: instant,
    expires_at: instant,
    status: z.enum(['issued', 'expired', 'revoked']),
    approvers: z.array(z.object({ iss: z.string(), sub: z.string(), at: instant })),
    break_glass: z.boolean(),
    authorization_details: authorizationDetails.optional().meta({ description: 'RFC 9396: the objects the request names (duties follow them).' }),
    act: act.optional(),
    revoked_at: instant.optional(),
    revoke_reason: z.string().nullable().optional(),
  })
  .meta({ id: 'Issuance', description: 'One minted token.' });

export const custodyRow = z
  .object({
    step: z.string().meta({ description: 'The step of the duty the request took part in.' }),
    request_id: z.string(),
    status: z.enum(REQUEST_STATUSES),
    requester: principal,
    initiator: z.string().optional(),
    act: act.optional(),
    approvals: z.array(
      z.object({ iss: z.string(), sub: z.string(), decision: z.enum(['approve', 'deny']), reason: z.string(), at: instant }),
    ),
    created_at: instant,
    issued_at: instant.optional(),
  })
  .meta({ id: 'CustodyStep', description: 'One request that named the object for a step of the duty.' });

export const entitlements = z
  .object({
    since: instant.meta({ description: 'Tokens issued from this time on are counted (default: 30 days ago).' }),
    items: z.array(
      z
        .object({
          policy: z.string().meta({ description: 'A policy `id` of the running configuration.' }),
          scope: z.string().meta({ description: 'A scope that policy grants.' }),
          issued: z.number().int().min(0).meta({ description: 'Tokens issued since `since` holding this scope under this policy (the first, in configuration order, that granted it to the requester); 0: a grant nobody uses.' }),
          last_issued_at: instant.nullable().meta({ description: 'The latest of them; null when none.' }),
        })
        .meta({ id: 'Entitlement' }),
    ),
    next_cursor: z.null().meta({ description: 'Always null: every grant of the configuration is on one page.' }),
  })
  .meta({ id: 'Entitlements', description: 'What the running configuration grants against what was used: one row per (policy, scope), in configuration order.' });

export const auditEvent = z
  .object({
    seq: z.number().int().min(1),
    at: instant,
    type: z.string(),
    actor: principalOrNull,
    request_id: z.string().optional(),
    data: z.record(z.string(), z.unknown()),
    prev_hash: z.string(),
    hash: z.string().meta({ description: 'hex(sha256(prev_hash + canonical JSON of {seq, at, type, actor, request_id, data})).' }),
  })
  .meta({ id: 'AuditEvent' });

export const chainVerdict = z
  .union([
    z.object({ ok: z.literal(true), events: z.number().int(), head: z.string() }),
    z.object({ ok: z.literal(false), first_bad_seq: z.number().int() }),
    z.object({ ok: z.literal(false), reason: z.literal('truncated').meta({ description: 'The chain no longer holds the checkpoint\'s head.' }) }),
  ])
  .meta({ id: 'ChainVerdict' });

export const checkpoint = z
  .object({
    seq: z.number().int(),
    hash: z.string(),
    at: z.string(),
    checkpoint: z.string().meta({ description: 'A JWS, header `typ: checkpoint+jwt`, claims `iss`, `seq`, `hash`, `iat`, signed with a key of the JWKS.' }),
  })
  .meta({ id: 'Checkpoint' });

export const consoleConfig = z
  .looseObject({ issuer: z.string(), discovery_url: z.string(), client_id: z.string(), cli_client_id: z.string(), scopes: z.array(z.string()) })
  .meta({ id: 'ConsoleConfig', description: 'Where people sign in: the person issuer, its discovery document, the client ids of the console and of `jit login`.' });

export const revocation = z.object({ jti: z.string(), exp: z.number().int().meta({ description: 'Seconds since the epoch, as in the token.' }) });

export const tokenExchangeSuccess = z
  .object({
    access_token: z.string(),
    issued_token_type: z.literal('urn:ietf:params:oauth:token-type:access_token'),
    token_type: tokenType,
    expires_in: z.number().int(),
    scope: z.string(),
    request_id: z.string(),
    authorization_details: authorizationDetails.optional().meta({ description: 'RFC 9396: the objects the request names (duties follow them).' }),
  })
  .meta({ id: 'TokenExchangeResponse' });

export const introspection = z
  .looseObject({
    active: z.boolean(),
    token_type: tokenType.optional(),
    iss: z.string().optional(),
    sub: z.string().optional(),
    aud: z.union([z.string(), z.array(z.string())]).optional(),
    exp: z.number().int().optional(),
    jti: z.string().optional(),
    scope: z.string().optional(),
  })
  .meta({ id: 'Introspection', description: 'RFC 7662: `{active: false}`, or `active: true` with the token\'s claims.' });

export const serverMetadata = z
  .looseObject({
    issuer: z.string(),
    jwks_uri: z.string(),
    token_endpoint: z.string(),
    introspection_endpoint: z.string(),
    revocation_endpoint: z.string(),
    response_types_supported: z.array(z.string()).meta({ description: 'Required by RFC 8414; empty: the broker has no authorization endpoint.' }),
    grant_types_supported: z.array(z.string()),
    token_endpoint_auth_methods_supported: z.array(z.string()),
    introspection_endpoint_auth_methods_supported: z.array(z.string()).meta({ description: '`Bearer`: the caller\'s identity token.' }),
    revocation_endpoint_auth_methods_supported: z.array(z.string()).meta({ description: '`Bearer`: the caller\'s identity token.' }),
    scopes_supported: z.array(z.string()),
    access_token_signing_alg_values_supported: z.array(z.string()),
    authorization_details_types_supported: z.array(z.string()).meta({ description: 'RFC 9396: the types `authorization_details` may hold (the duties\').' }),
    dpop_signing_alg_values_supported: z.array(z.string()).meta({ description: 'RFC 9449: the DPoP proof algorithms accepted.' }),
  })
  .meta({ id: 'ServerMetadata', description: 'RFC 8414 authorization server metadata.' });

export const jwks = z
  .object({ keys: z.array(z.looseObject({ kty: z.string(), kid: z.string() })) })
  .meta({ id: 'JWKS', description: 'The broker\'s public signing keys.' });

export const status = <T extends string>(value: T) => z.object({ status: z.literal(value) });

export const text = z.string();
