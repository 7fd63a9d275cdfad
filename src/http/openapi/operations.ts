import { z } from 'zod';
import {
  breakGlassQuery,
  credentialRequestBody,
  custodyQuery,
  decisionBody,
  entitlementsQuery,
  eventsQuery,
  issuancesQuery,
  noBody,
  ownRequestsQuery,
  pageQuery,
  verifyQuery,
  requestIdParams,
  revokeBody,
  reviewBody,
  tokenExchangeForm,
  tokenForm,
} from '../schemas.js';
import * as r from './responses.js';

/**
 * Every operation of the HTTP API, CONTRACT section 4: the request schemas are the very ones
 * the routes validate with (http/schemas.ts), the responses those of ./responses.ts. The
 * OpenAPI document is generated from this table, and the metrics' `route` label is its path
 * template, whatever the outcome.
 */

type Media = 'application/json' | 'application/x-www-form-urlencoded' | 'application/problem+json' | 'application/x-ndjson' | 'text/csv' | 'text/plain' | 'text/html';

export interface Body {
  contentType: Media;
  schema: z.ZodType;
  /** Validates against `schema`: a test checks every one. */
  example?: unknown;
}

export interface Operation {
  method: 'get' | 'post';
  /** OpenAPI path template: `/v1/credentials/{id}`. */
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tag: 'discovery' | 'health' | 'oauth' | 'requesters' | 'approvers' | 'auditors' | 'resource servers' | 'console';
  /** `identity`: `Authorization: Bearer <identity JWT>`. */
  auth: 'none' | 'identity';
  params?: z.ZodObject;
  query?: z.ZodObject;
  body?: Body & { required: boolean };
  responses: Record<number, { description: string; content?: Body[] }>;
}

// Examples, one consistent story: bob's pipeline asks for model:deploy, alice approves.
const REQUEST_ID = '01938d5e-7c1a-7b3e-9f4d-2a6c8e0b1d3f';
const DIGEST = '9b4c1e0f5a7d3b2c8e6f1a0d4c7b9e2f5a8d1c3b6e9f2a5d8c1b4e7a0d3f6c9b';
const ACCESS_TOKEN = 'eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiYXQrand0In0.eyJzdWIiOiJyZXBvOmFjbWUvbWwifQ.c2lnbmF0dXJl';
const IDENTITY_TOKEN = 'eyJhbGciOiJSUzI1NiIsImtpZCI6ImNpMSJ9.eyJpc3MiOiJodHRwczovL2NpLmV4YW1wbGUuY29tIn0.c2lnbmF0dXJl';
const PIPELINE = { iss: 'https://ci.example.com', sub: 'repo:acme/ml:ref:refs/heads/main' };
const ALICE = { iss: 'https://sso.example.com', sub: 'alice' };
const T0 = '2026-12-01T10:00:00.000Z';

const json = (schema: z.ZodType, example?: unknown): Body => ({ contentType: 'application/json', schema, example });
const form = (schema: z.ZodType, example: unknown): Body & { required: boolean } => ({
  contentType: 'application/x-www-form-urlencoded',
  schema,
  example,
  required: true,
});

const issuedExample = {
  request_id: REQUEST_ID,
  status: 'issued',
  access_token: ACCESS_TOKEN,
  token_type: 'Bearer',
  expires_in: 600,
  expires_at: '2026-12-01T10:10:00.000Z',
  scopes: ['model:deploy'],
  audience: 'registry.acme.internal',
  break_glass: false,
};

const requestExample = {
  request_id: REQUEST_ID,
  status: 'approved',
  requester: PIPELINE,
  initiator: 'bob',
  task_id: 'deploy-7',
  scopes: ['model:deploy'],
  audience: 'registry.acme.internal',
  ttl_seconds: 600,
  justification: null,
  break_glass: false,
  digest: DIGEST,
  approvals_required: 1,
  approvals: [{ ...ALICE, decision: 'approve', reason: 'release 7 reviewed', at: '2026-12-01T10:02:00.000Z' }],
  created_at: T0,
  expires_at: '2026-12-01T10:17:00.000Z',
};

const problemExample = (status: number, type: string, title: string, detail: string) => ({
  type: `urn:jit-broker:problem:${type}`,
  title,
  status,
  detail,
});

/**
 * The signing keys are the store's, read again every few seconds: when the store is out of reach
 * (PostgreSQL down) past that, the JWKS and the metadata naming their algorithms are a 503.
 */
const keysOutOfReach = {
  503: {
    description: 'The signing keys cannot be read from the store right now (`Retry-After`).',
    content: [{ contentType: 'application/problem+json' as const, schema: r.problem, example: problemExample(503, 'unavailable', 'Unavailable', 'The broker could not reach its database; nothing was granted. Try again shortly.') }],
  },
};

/** The problem answers an endpoint may give, each with an example. */
function problems(...statuses: (400 | 401 | 403 | 404 | 409 | 413 | 429 | 503)[]): Operation['responses'] {
  const all = {
    400: ['Invalid input: a bad field (listed under `errors`), an unknown field, or text that is not well-formed.', problemExample(400, 'invalid_request', 'Invalid request', 'Invalid body: scopes: Too small: expected array to have >=1 items')],
    401: ['No identity token, or one that was not accepted (`WWW-Authenticate: Bearer`).', problemExample(401, 'invalid_token', 'Invalid token', 'The identity token was not accepted.')],
    403: ['Refused: by policy, a role the caller lacks, or separation of duties.', problemExample(403, 'policy_denied', 'Denied by policy', 'This needs the role auditor or admin.')],
    404: ['No such request that the caller may see.', problemExample(404, 'not_found', 'Not found', `No request ${REQUEST_ID} that you may see.`)],
    409: ['The request is not in a state that allows this.', problemExample(409, 'conflict', 'Conflict', 'The request is issued; only an approved request\'s token can be collected, and only once.')],
    413: ['The body is larger than 64 KiB.', problemExample(413, 'invalid_request', 'Invalid request', 'The request body is larger than 64 KiB.')],
    429: ['A quota or limit is spent (`Retry-After`).', problemExample(429, 'rate_limited', 'Rate limited', 'Too many credential requests: at most 600 a minute per identity.')],
    503: ['The store cannot be read or written right now (a PostgreSQL outage, a full disk): nothing was granted (`Retry-After`).', problemExample(503, 'unavailable', 'Unavailable', 'The broker could not reach its database; nothing was granted. Try again shortly.')],
  } as const;
  return Object.fromEntries(
    statuses.map((status) => {
      const [description, example] = all[status];
      return [status, { description, content: [{ contentType: 'application/problem+json', schema: r.problem, example }] }];
    }),
  );
}

const oauthProblem = (description: string, example: unknown) => ({
  description,
  content: [json(r.oauthError, example)],
});

const v1 = (status: number, description: string, body: Body) => ({ [status]: { description, content: [body] } });

/** At `/oauth2`, the 503 of a store out of reach, as an OAuth error. */
const storeOutOfReach = oauthProblem('The store cannot be read or written right now: nothing was granted (`Retry-After`).', {
  error: 'temporarily_unavailable',
  error_description: 'The broker could not reach its database; nothing was granted. Try again shortly.',
});

export const OPERATIONS: readonly Operation[] = [
  {
    method: 'get',
    path: '/.well-known/oauth-authorization-server',
    operationId: 'authorizationServerMetadata',
    summary: 'RFC 8414 authorization server metadata',
    tag: 'discovery',
    auth: 'none',
    responses: {
      200: {
        description: 'The metadata.',
        content: [
          json(r.serverMetadata, {
            issuer: 'https://broker.example.com',
            jwks_uri: 'https://broker.example.com/.well-known/jwks.json',
            token_endpoint: 'https://broker.example.com/oauth2/token',
            introspection_endpoint: 'https://broker.example.com/oauth2/introspect',
            revocation_endpoint: 'https://broker.example.com/oauth2/revoke',
            response_types_supported: [],
            grant_types_supported: ['urn:ietf:params:oauth:grant-type:token-exchange'],
            token_endpoint_auth_methods_supported: ['none'],
            introspection_endpoint_auth_methods_supported: ['Bearer'],
            revocation_endpoint_auth_methods_supported: ['Bearer'],
            scopes_supported: ['artifacts:read', 'model:deploy'],
            access_token_signing_alg_values_supported: ['ES256'],
            authorization_details_types_supported: ['model'],
            dpop_signing_alg_values_supported: ['ES256', 'EdDSA'],
          }),
        ],
      },
      ...keysOutOfReach,
    },
  },
  {
    method: 'get',
    path: '/.well-known/openid-configuration',
    operationId: 'openidConfiguration',
    summary: 'The same metadata, at the OpenID Connect discovery path',
    tag: 'discovery',
    auth: 'none',
    responses: { 200: { description: 'The metadata.', content: [json(r.serverMetadata)] }, ...keysOutOfReach },
  },
  {
    method: 'get',
    path: '/.well-known/jwks.json',
    operationId: 'jwks',
    summary: 'The public keys that verify the broker\'s tokens',
    description: 'Cacheable for at most half of `signing.publishAhead` (`Cache-Control: max-age`).',
    tag: 'discovery',
    auth: 'none',
    responses: {
      200: {
        description: 'The JWKS.',
        content: [json(r.jwks, { keys: [{ kty: 'EC', crv: 'P-256', x: 'f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU', y: 'x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0', kid: 'k1', alg: 'ES256', use: 'sig' }] })],
      },
      ...keysOutOfReach,
    },
  },
  {
    method: 'get',
    path: '/openapi.json',
    operationId: 'openapi',
    summary: 'This document',
    tag: 'discovery',
    auth: 'none',
    responses: { 200: { description: 'The OpenAPI 3.1 document of the broker\'s HTTP API.', content: [json(z.looseObject({ openapi: z.string() }))] } },
  },
  {
    method: 'get',
    path: '/healthz',
    operationId: 'healthz',
    summary: 'Alive',
    tag: 'health',
    auth: 'none',
    responses: { 200: { description: 'The process answers.', content: [json(r.status('ok'), { status: 'ok' })] } },
  },
  {
    method: 'get',
    path: '/readyz',
    operationId: 'readyz',
    summary: 'Ready: the store takes a write and a signing key is at hand',
    tag: 'health',
    auth: 'none',
    responses: { 200: { description: 'Ready to grant.', content: [json(r.status('ready'), { status: 'ready' })] }, ...problems(503) },
  },
  {
    method: 'get',
    path: '/metrics',
    operationId: 'metrics',
    summary: 'Prometheus metrics',
    tag: 'health',
    auth: 'none',
    responses: {
      200: {
        description: 'Prometheus text format.',
        content: [{ contentType: 'text/plain', schema: r.text, example: 'broker_issuances_total{break_glass="false",approved="true"} 12\n' }],
      },
      503: {
        description: 'The metrics cannot be gathered right now (a worker of several could not reach the others; `Retry-After`).',
        content: [{ contentType: 'application/problem+json', schema: r.problem, example: problemExample(503, 'unavailable', 'Unavailable', 'The metrics cannot be gathered right now.') }],
      },
    },
  },
  {
    method: 'post',
    path: '/oauth2/token',
    operationId: 'tokenExchange',
    summary: 'RFC 8693 token exchange: an identity token in, an access token out',
    description:
      'The identity token is the `subject_token`; no Authorization header. A request that needs approval answers 400 `authorization_pending` with its `request_id`; repeat the exchange with that `request_id` once it is approved.',
    tag: 'oauth',
    auth: 'none',
    body: form(tokenExchangeForm, {
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: IDENTITY_TOKEN,
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      scope: 'artifacts:read',
      audience: 'registry.acme.internal',
      task_id: 'build-42',
    }),
    responses: {
      200: {
        description: 'Issued.',
        content: [
          json(r.tokenExchangeSuccess, {
            access_token: ACCESS_TOKEN,
            issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
            token_type: 'Bearer',
            expires_in: 900,
            scope: 'artifacts:read',
            request_id: REQUEST_ID,
          }),
        ],
      },
      400: oauthProblem('`authorization_pending` (with `request_id`), `invalid_request`, `invalid_scope` (also for separation of duties), `invalid_target` or `unsupported_grant_type`.', {
        error: 'authorization_pending',
        error_description: 'The request needs approval; repeat the exchange with this request_id once it is approved.',
        request_id: REQUEST_ID,
      }),
      413: oauthProblem('The body is larger than 64 KiB.', { error: 'invalid_request', error_description: 'The request body is larger than 64 KiB.' }),
      429: oauthProblem('A quota or limit is spent (`Retry-After`).', { error: 'slow_down', error_description: 'Too many credential requests: at most 600 a minute per identity.' }),
      503: storeOutOfReach,
    },
  },
  {
    method: 'post',
    path: '/oauth2/introspect',
    operationId: 'introspect',
    summary: 'RFC 7662 token introspection (role `introspector`)',
    tag: 'resource servers',
    auth: 'identity',
    body: form(tokenForm, { token: ACCESS_TOKEN }),
    responses: {
      200: {
        description: '`{active: false}` for an unknown, expired, revoked or foreign token; else its claims.',
        content: [json(r.introspection, { active: true, token_type: 'Bearer', iss: 'https://broker.example.com', sub: PIPELINE.sub, aud: 'registry.acme.internal', exp: 1796119800, jti: '01938d5e-8a2b-7c4d-9e1f-3b5d7f9a1c2e', scope: 'model:deploy' })],
      },
      400: oauthProblem('No `token`.', { error: 'invalid_request', error_description: 'Invalid body: token: The token parameter is required, once.' }),
      401: oauthProblem('No identity token, or one that was not accepted.', { error: 'invalid_token', error_description: 'The identity token was not accepted.' }),
      403: oauthProblem('The caller is not an `introspector`.', { error: 'insufficient_scope', error_description: 'This needs the role introspector.' }),
      413: oauthProblem('The body is larger than 64 KiB.', { error: 'invalid_request', error_description: 'The request body is larger than 64 KiB.' }),
      503: storeOutOfReach,
    },
  },
  {
    method: 'post',
    path: '/oauth2/revoke',
    operationId: 'revokeToken',
    summary: 'RFC 7009 revocation of the caller\'s own token',
    description: 'Unknown or expired tokens are answered 200 too, as the RFC asks; a token issued to another identity is 400 `unauthorized_client` (RFC 7009 section 2.2.1), and nothing is revoked.',
    tag: 'oauth',
    auth: 'identity',
    body: form(tokenForm, { token: ACCESS_TOKEN }),
    responses: {
      200: { description: 'Revoked (or nothing to revoke).' },
      400: oauthProblem('No `token`, or a token issued to another identity (`unauthorized_client`).', { error: 'invalid_request', error_description: 'Invalid body: token: The token parameter is required, once.' }),
      401: oauthProblem('No identity token, or one that was not accepted.', { error: 'invalid_token', error_description: 'The identity token was not accepted.' }),
      413: oauthProblem('The body is larger than 64 KiB.', { error: 'invalid_request', error_description: 'The request body is larger than 64 KiB.' }),
      503: storeOutOfReach,
    },
  },
  {
    method: 'post',
    path: '/v1/credentials',
    operationId: 'requestCredential',
    summary: 'Ask for a credential for one task',
    description: 'Low-risk scopes (or allowed break-glass) are issued at once (201); any high-risk scope opens a request for approval (202, `Location`).',
    tag: 'requesters',
    auth: 'identity',
    body: {
      ...json(credentialRequestBody, { task_id: 'deploy-7', scopes: ['model:deploy'], audience: 'registry.acme.internal', ttl_seconds: 600 }),
      required: true,
    },
    responses: {
      ...v1(201, 'Issued.', json(r.issuedCredential, issuedExample)),
      ...v1(202, 'Awaiting approval.', json(r.pendingCredential, { request_id: REQUEST_ID, status: 'pending_approval', approvals_required: 1, approvals: [], digest: DIGEST, expires_at: '2026-12-01T11:00:00.000Z' })),
      ...problems(400, 401, 403, 413, 429, 503),
    },
  },
  {
    method: 'get',
    path: '/v1/credentials',
    operationId: 'listOwnRequests',
    summary: 'The caller\'s own requests, newest first: those it asked for and the delegated ones it acts in',
    tag: 'requesters',
    auth: 'identity',
    query: ownRequestsQuery,
    responses: { ...v1(200, 'A page.', json(r.page(r.credentialRequest, 'CredentialRequestPage'), { items: [requestExample], next_cursor: null })), ...problems(400, 401, 503) },
  },
  {
    method: 'get',
    path: '/v1/credentials/{id}',
    operationId: 'getRequest',
    summary: 'A request, as its requester, approvers and auditors see it',
    tag: 'requesters',
    auth: 'identity',
    params: requestIdParams,
    responses: { ...v1(200, 'The request.', json(r.credentialRequest, requestExample)), ...problems(400, 401, 404, 503) },
  },
  {
    method: 'post',
    path: '/v1/credentials/{id}/token',
    operationId: 'collectToken',
    summary: 'Collect the token of an approved request, once',
    description: 'No body (or `{}`).',
    tag: 'requesters',
    auth: 'identity',
    params: requestIdParams,
    body: { ...json(noBody, {}), required: false },
    responses: { ...v1(201, 'Issued; its lifetime starts now.', json(r.issuedCredential, issuedExample)), ...problems(400, 401, 404, 409, 413, 503) },
  },
  {
    method: 'post',
    path: '/v1/credentials/{id}/complete',
    operationId: 'completeRequest',
    summary: 'The task is done: revoke the grant (requester or admin)',
    description: 'No body (or `{}`).',
    tag: 'requesters',
    auth: 'identity',
    params: requestIdParams,
    body: { ...json(noBody, {}), required: false },
    responses: { ...v1(200, 'The request, revoked.', json(r.credentialRequest)), ...problems(400, 401, 403, 404, 409, 413, 503) },
  },
  {
    method: 'post',
    path: '/v1/credentials/{id}/revoke',
    operationId: 'revokeRequest',
    summary: 'Revoke a grant (requester or admin)',
    tag: 'requesters',
    auth: 'identity',
    params: requestIdParams,
    body: { ...json(revokeBody, { reason: 'deployment aborted' }), required: true },
    responses: { ...v1(200, 'The request, revoked.', json(r.credentialRequest)), ...problems(400, 401, 403, 404, 409, 413, 503) },
  },
  {
    method: 'post',
    path: '/v1/credentials/{id}/approvals',
    operationId: 'decideRequest',
    summary: 'Approve or deny a pending request',
    description:
      'The `digest` must be the request\'s. An identity that may not approve every scope gets 404; the requester, or the person who started its job, 403 `separation_of_duties`.',
    tag: 'approvers',
    auth: 'identity',
    params: requestIdParams,
    body: { ...json(decisionBody, { decision: 'approve', reason: 'release 7 reviewed', digest: DIGEST }), required: true },
    responses: { ...v1(200, 'The request after the decision.', json(r.credentialRequest, requestExample)), ...problems(400, 401, 403, 404, 409, 413, 503) },
  },
  {
    method: 'post',
    path: '/v1/credentials/{id}/review',
    operationId: 'reviewBreakGlass',
    summary: 'Post-review a break-glass grant, once',
    tag: 'approvers',
    auth: 'identity',
    params: requestIdParams,
    body: { ...json(reviewBody, { outcome: 'justified', notes: 'matches incident 99' }), required: true },
    responses: { ...v1(200, 'The request with its review.', json(r.credentialRequest)), ...problems(400, 401, 403, 404, 409, 413, 503) },
  },
  {
    method: 'get',
    path: '/v1/approvals',
    operationId: 'listApprovals',
    summary: 'Pending requests the caller may decide',
    tag: 'approvers',
    auth: 'identity',
    query: pageQuery,
    responses: { ...v1(200, 'A page.', json(r.page(r.credentialRequest, 'CredentialRequestPage'))), ...problems(400, 401, 503) },
  },
  {
    method: 'get',
    path: '/v1/break-glass',
    operationId: 'listBreakGlass',
    summary: 'Break-glass grants by review state (approvers, auditors, admins)',
    tag: 'approvers',
    auth: 'identity',
    query: breakGlassQuery,
    responses: { ...v1(200, 'A page.', json(r.page(r.credentialRequest, 'CredentialRequestPage'))), ...problems(400, 401, 403, 503) },
  },
  {
    method: 'get',
    path: '/v1/revocations',
    operationId: 'listRevocations',
    summary: 'Revoked tokens not yet expired (role `introspector`)',
    tag: 'resource servers',
    auth: 'identity',
    query: pageQuery,
    responses: {
      ...v1(200, 'A page.', json(r.page(r.revocation, 'RevocationPage'), { items: [{ jti: '01938d5e-8a2b-7c4d-9e1f-3b5d7f9a1c2e', exp: 1796119800 }], next_cursor: null })),
      ...problems(400, 401, 403, 503),
    },
  },
  {
    method: 'get',
    path: '/v1/audit/issuances',
    operationId: 'auditIssuances',
    summary: 'One row per minted token (auditors, admins)',
    description: '`format=ndjson` or `format=csv` streams every match instead of a page.',
    tag: 'auditors',
    auth: 'identity',
    query: issuancesQuery,
    responses: {
      200: {
        description: 'A page, or every match streamed.',
        content: [
          json(r.page(r.issuanceRow, 'IssuancePage'), {
            items: [
              {
                jti: '01938d5e-8a2b-7c4d-9e1f-3b5d7f9a1c2e',
                request_id: REQUEST_ID,
                requester: PIPELINE,
                task_id: 'deploy-7',
                scopes: ['model:deploy'],
                audience: 'registry.acme.internal',
                justification: null,
                issued_at: '2026-12-01T10:03:00.000Z',
                expires_at: '2026-12-01T10:13:00.000Z',
                status: 'issued',
                approvers: [{ ...ALICE, at: '2026-12-01T10:02:00.000Z' }],
                break_glass: false,
              },
            ],
            next_cursor: null,
          }),
          { contentType: 'application/x-ndjson', schema: r.text },
          { contentType: 'text/csv', schema: r.text },
        ],
      },
      ...problems(400, 401, 403, 503),
    },
  },
  {
    method: 'get',
    path: '/v1/audit/duties',
    operationId: 'auditDuties',
    summary: 'The chain of custody of one object (auditors, admins)',
    description:
      'Every request that named the object (`identifier`, compared normalised) for a step of the duty and was accepted, denied and expired ones included, oldest first: who took part in which step, who approved, how it ended.',
    tag: 'auditors',
    auth: 'identity',
    query: custodyQuery,
    responses: {
      ...v1(
        200,
        'A page.',
        json(r.page(r.custodyRow, 'CustodyPage'), {
          items: [
            {
              step: 'train',
              request_id: REQUEST_ID,
              status: 'expired',
              requester: PIPELINE,
              initiator: 'bob-gh',
              approvals: [],
              created_at: T0,
              issued_at: T0,
            },
          ],
          next_cursor: null,
        }),
      ),
      ...problems(400, 401, 403, 503),
    },
  },
  {
    method: 'get',
    path: '/v1/audit/entitlements',
    operationId: 'auditEntitlements',
    summary: 'What the configuration grants against what was used (auditors, admins)',
    description:
      'One row per (policy, scope) the running configuration grants, in configuration order, counting every token issued since `since` (children, delegated and break-glass ones too) under the first policy that granted the scope to its requester. `issued: 0` marks a grant nobody uses: the drift report.',
    tag: 'auditors',
    auth: 'identity',
    query: entitlementsQuery,
    responses: {
      ...v1(
        200,
        'Every grant, on one page.',
        json(r.entitlements, {
          since: '2026-11-01T10:00:00.000Z',
          items: [
            { policy: 'ml-main', scope: 'artifacts:read', issued: 1204, last_issued_at: '2026-12-01T09:58:12.000Z' },
            { policy: 'ml-main', scope: 'model:deploy', issued: 31, last_issued_at: '2026-11-30T16:40:03.000Z' },
            { policy: 'on-call', scope: 'model:deploy', issued: 0, last_issued_at: null },
          ],
          next_cursor: null,
        }),
      ),
      ...problems(400, 401, 403, 503),
    },
  },
  {
    method: 'get',
    path: '/v1/audit/events',
    operationId: 'auditEvents',
    summary: 'The hash-chained event log (auditors, admins)',
    description: '`format=ndjson` streams every match instead of a page.',
    tag: 'auditors',
    auth: 'identity',
    query: eventsQuery,
    responses: {
      200: {
        description: 'A page, or every match streamed.',
        content: [
          json(r.page(r.auditEvent, 'AuditEventPage'), {
            items: [
              {
                seq: 42,
                at: '2026-12-01T10:02:00.000Z',
                type: 'approval.recorded',
                actor: ALICE,
                request_id: REQUEST_ID,
                data: { decision: 'approve', reason: 'release 7 reviewed', digest: DIGEST },
                prev_hash: '3f1c5a7e9b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a',
                hash: '7e9b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a3f1c5a',
              },
            ],
            next_cursor: null,
          }),
          { contentType: 'application/x-ndjson', schema: r.text },
        ],
      },
      ...problems(400, 401, 403, 503),
    },
  },
  {
    method: 'get',
    path: '/v1/audit/verify',
    operationId: 'auditVerify',
    summary: 'Verify the audit chain (auditors, admins)',
    description: 'With `checkpoint`, also checks that the chain still holds the head that checkpoint names: `{ok: false, reason: "truncated"}` when it does not.',
    tag: 'auditors',
    auth: 'identity',
    query: verifyQuery,
    responses: {
      ...v1(200, 'The verdict.', json(r.chainVerdict, { ok: true, events: 1042, head: '7e9b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a3f1c5a' })),
      ...problems(400, 401, 403, 503),
    },
  },
  {
    method: 'get',
    path: '/v1/audit/checkpoint',
    operationId: 'auditCheckpoint',
    summary: 'The chain head, signed by the broker (auditors, admins)',
    description: 'Keep it off the broker\'s host; `verify?checkpoint=` later tells whether the chain still holds it. Reading it appends nothing. It names a head already on disk: the answer waits for the write in flight to be synced (milliseconds).',
    tag: 'auditors',
    auth: 'identity',
    responses: {
      ...v1(200, 'The signed head.', json(r.checkpoint, { seq: 1042, hash: '7e9b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a3f1c5a', at: T0, checkpoint: ACCESS_TOKEN })),
      ...problems(400, 401, 403, 503),
    },
  },
  ...consolePages(),
  {
    method: 'get',
    path: '/console/config.json',
    operationId: 'consoleConfig',
    summary: 'Where people sign in: what the console and `jit login` read',
    tag: 'console',
    auth: 'none',
    responses: {
      200: {
        description: 'The sign-in document.',
        content: [
          json(r.consoleConfig, {
            issuer: 'https://sso.example.com',
            discovery_url: 'https://sso.example.com/.well-known/openid-configuration',
            client_id: 'jit-console',
            cli_client_id: 'jit-cli',
            scopes: ['openid', 'profile', 'groups'],
          }),
        ],
      },
      404: { description: 'No console is configured.' },
      503: { description: 'The issuer\'s discovery document cannot be used (`Retry-After`).' },
    },
  },
];

/** The console's pages: one HTML page for each of its views (the browser code draws them). */
function consolePages(): Operation[] {
  const views = [
    ['/console', 'consolePage', 'The web console for people: sign in with the person issuer, then decide, review and audit through this API'],
    ['/console/callback', 'consoleCallback', 'Where the person issuer returns the sign-in (authorization code with PKCE)'],
    ['/console/signed-out', 'consoleSignedOut', 'The console after sign-out'],
    ['/console/mine', 'consoleMine', 'The console: your own requests'],
    ['/console/break-glass', 'consoleBreakGlass', 'The console: break-glass grants awaiting review'],
    ['/console/audit', 'consoleAudit', 'The console: the auditor\'s view'],
    ['/console/requests/{id}', 'consoleRequest', 'The console: one request, to decide (the `url` of webhook bodies)'],
  ] as const;
  return views.map(([path, operationId, summary]) => ({
    method: 'get' as const,
    path,
    operationId,
    summary,
    tag: 'console' as const,
    auth: 'none' as const,
    ...(path.includes('{id}') ? { params: requestIdParams } : {}),
    responses: { 200: { description: 'The console page (its script loads from /console/assets/).', content: [{ contentType: 'text/html' as const, schema: r.text }] } },
  }));
}

const templates = OPERATIONS.map((operation) => ({
  operation,
  pattern: new RegExp(`^${operation.path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/\\\{[a-z_]+\\\}/g, '[^/]+')}/?$`),
}));

/**
 * The operation a request is for, by its method and path (no query string), or undefined: the
 * `route` label of the metrics, whatever the outcome.
 */
export function findOperation(method: string, path: string): Operation | undefined {
  const verb = method === 'HEAD' ? 'get' : method.toLowerCase();
  return templates.find(({ operation, pattern }) => operation.method === verb && pattern.test(path))?.operation;
}

/** The methods a path has operations for (HEAD with GET), or none: what a 405 names in `Allow`. */
export function methodsOf(path: string): string[] {
  const verbs = new Set(templates.filter(({ pattern }) => pattern.test(path)).map(({ operation }) => operation.method.toUpperCase()));
  if (verbs.has('GET')) verbs.add('HEAD');
  return [...verbs].sort();
}
