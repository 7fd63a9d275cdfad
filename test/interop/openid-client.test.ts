import * as client from 'openid-client';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { auth } from 'express-oauth2-jwt-bearer';
import { calculateJwkThumbprint, createRemoteJWKSet, decodeJwt, exportJWK, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENTS_ISS, bearer, withAgents } from '../helpers/broker.js';
import { createTestIssuer, type TestIssuer } from '../helpers/issuer.js';
import { startServedBroker, type ServedBroker } from './served-broker.js';

/**
 * panva's openid-client, as an OAuth client written by nobody here would use the broker:
 * discovery, RFC 8693 token exchange as a public client, introspection and revocation with the
 * caller's identity as a Bearer token.
 */

const GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';

let served: ServedBroker;
beforeAll(async () => {
  served = await startServedBroker();
});
afterAll(async () => {
  await served.close();
});

/** The broker's way in to introspection and revocation: the caller's own identity token. */
const bearerIdentity =
  (token: string): client.ClientAuth =>
  (_server, _client, _body, headers) => {
    headers.set('authorization', `Bearer ${token}`);
  };
const discover = (clientAuth: client.ClientAuth = client.None(), algorithm: 'oauth2' | 'oidc' = 'oauth2') =>
  client.discovery(new URL(served.url), 'ci-pipeline', undefined, clientAuth, { execute: [client.allowInsecureRequests], algorithm });

/** The OAuth error code of a refusal, whether in the body or in WWW-Authenticate. */
const oauthError = async (promise: Promise<unknown>) => {
  const error = await promise.then(() => undefined, (e: unknown) => e);
  if (error instanceof client.ResponseBodyError) return { error: error.error, body: error.cause as Record<string, unknown> };
  if (error instanceof client.WWWAuthenticateChallengeError) return { error: error.cause[0]?.parameters.error, body: {} as Record<string, unknown> };
  throw new Error(`not an OAuth refusal: ${String(error)}`);
};

const exchange = async (config: client.Configuration, parameters: Record<string, string> | URLSearchParams) =>
  client.genericGrantRequest(config, GRANT, parameters);
const form = async (extra: Record<string, string> = {}) => ({
  subject_token: await served.t.as.pipeline(),
  subject_token_type: JWT_TYPE,
  scope: 'artifacts:read',
  task_id: 'build-1',
  ...extra,
});

describe('openid-client', () => {
  it.each(['oauth2', 'oidc'] as const)('discovers the broker (%s well-known document) with every endpoint and how each takes its caller', async (algorithm) => {
    const metadata = (await discover(client.None(), algorithm)).serverMetadata();
    expect(metadata).toMatchObject({
      issuer: served.url,
      token_endpoint: `${served.url}/oauth2/token`,
      introspection_endpoint: `${served.url}/oauth2/introspect`,
      revocation_endpoint: `${served.url}/oauth2/revoke`,
      jwks_uri: `${served.url}/.well-known/jwks.json`,
      response_types_supported: [],
      grant_types_supported: [GRANT],
      token_endpoint_auth_methods_supported: ['none'],
      introspection_endpoint_auth_methods_supported: ['Bearer'],
      revocation_endpoint_auth_methods_supported: ['Bearer'],
    });
  });

  it('exchanges an identity for an access token as a public client, naming the audience as audience or RFC 8707 resource', async () => {
    const config = await discover();
    for (const target of [{ audience: 'registry.acme.internal' }, { resource: 'registry.acme.internal' }] as Record<string, string>[]) {
      const tokens = await exchange(config, await form(target));
      expect(tokens).toMatchObject({
        token_type: 'bearer',
        issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
        expires_in: 900,
        scope: 'artifacts:read',
      });
      expect(decodeJwt(tokens.access_token)).toMatchObject({ iss: served.url, aud: 'registry.acme.internal', task_id: 'build-1' });
    }
  });

  it('understands every refusal as a registered OAuth error', async () => {
    const config = await discover();
    const twoAudiences = new URLSearchParams(await form());
    twoAudiences.append('audience', 'registry.acme.internal');
    twoAudiences.append('audience', 'db.acme.internal');
    expect((await oauthError(exchange(config, twoAudiences))).error).toBe('invalid_target');
    expect((await oauthError(exchange(config, await form({ audience: 'a', resource: 'b' })))).error).toBe('invalid_target');
    expect((await oauthError(exchange(config, await form({ audience: 'x', scope: 'db:admin secrets:all' })))).error).toBe('invalid_scope');
    expect((await oauthError(exchange(config, await form({ audience: 'x', subject_token: 'forged' })))).error).toBe('invalid_request');
  });

  it('gets authorization_pending with a request_id for a high-risk scope, and collects the token with it once approved', async () => {
    const config = await discover();
    const workload = await served.t.as.ml();
    const pending = await oauthError(exchange(config, await form({ subject_token: workload, scope: 'model:deploy', audience: 'registry.acme.internal' })));
    expect(pending.error).toBe('authorization_pending');
    const requestId = pending.body.request_id as string;

    const { t } = served;
    const view = await t.http.get(`/v1/credentials/${requestId}`).set(bearer(workload));
    await t.http
      .post(`/v1/credentials/${requestId}/approvals`)
      .set(bearer(await t.as.person('alice', ['approvers', 'ml-release'])))
      .send({ decision: 'approve', reason: 'release reviewed', digest: view.body.digest });

    const tokens = await exchange(config, { subject_token: workload, subject_token_type: JWT_TYPE, request_id: requestId });
    expect(decodeJwt(tokens.access_token)).toMatchObject({ request_id: requestId, approvers: [expect.objectContaining({ sub: 'alice' })] });
  });

  it('introspects with the resource server\'s identity as Bearer, and the holder revokes its own token the same way', async () => {
    const holder = await served.t.as.pipeline();
    const { access_token } = await exchange(await discover(), await form({ subject_token: holder, audience: 'registry.acme.internal' }));
    const resourceServer = await discover(bearerIdentity(await served.t.as.pipeline({}, 'resource-server:registry')));

    expect(await client.tokenIntrospection(resourceServer, access_token)).toMatchObject({
      active: true,
      sub: 'repo:acme/app:ref:refs/heads/main',
      aud: 'registry.acme.internal',
      scope: 'artifacts:read',
      client_id: 'ci',
    });

    await client.tokenRevocation(await discover(bearerIdentity(holder)), access_token);
    expect(await client.tokenIntrospection(resourceServer, access_token)).toEqual({ active: false });
  });

  it('is told insufficient_scope when the caller lacks the introspector role', async () => {
    const { access_token } = await exchange(await discover(), await form({ audience: 'registry.acme.internal' }));
    const notAnIntrospector = await discover(bearerIdentity(await served.t.as.pipeline()));
    expect((await oauthError(client.tokenIntrospection(notAnIntrospector, access_token))).error).toBe('insufficient_scope');
  });
});

describe('openid-client, for an agent', () => {
  let agents: TestIssuer;
  let delegating: ServedBroker;
  beforeAll(async () => {
    agents = await createTestIssuer(AGENTS_ISS);
    delegating = await startServedBroker({ configure: (config) => withAgents(config as Record<string, any>, agents) });
  });
  afterAll(async () => {
    await delegating.close();
  });

  it('performs a delegated exchange unmodified (actor_token), and a resource server using jose reads the act chain', async () => {
    const config = await client.discovery(new URL(delegating.url), 'release-agent', undefined, client.None(), { execute: [client.allowInsecureRequests] });
    const tokens = await client.genericGrantRequest(config, GRANT, {
      subject_token: await delegating.t.as.person('alice', ['ml-eng']),
      subject_token_type: JWT_TYPE,
      actor_token: await agents.token('agent:release-1', { owner: 'olivia' }, { now: delegating.t.clock() }),
      actor_token_type: JWT_TYPE,
      scope: 'artifacts:read',
      audience: 'registry.acme.internal',
      task_id: 'assist',
    });
    expect(tokens).toMatchObject({ token_type: 'bearer', scope: 'artifacts:read' });
    const { payload } = await jwtVerify(tokens.access_token, createRemoteJWKSet(new URL(`${delegating.url}/.well-known/jwks.json`)), {
      issuer: delegating.url,
      audience: 'registry.acme.internal',
      typ: 'at+jwt',
      currentDate: new Date(delegating.t.clock()),
    });
    expect(payload).toMatchObject({ sub: 'alice', act: { iss: AGENTS_ISS, sub: 'agent:release-1' } });
  });
});

describe('openid-client, with DPoP', () => {
  it('obtains a bound token from the token endpoint unmodified, which express-oauth2-jwt-bearer takes with a proof, never as Bearer', async () => {
    const config = await discover();
    expect(config.serverMetadata().dpop_signing_alg_values_supported).toEqual(['ES256', 'EdDSA']);
    const keyPair = await client.randomDPoPKeyPair('ES256');
    const dpop = client.getDPoPHandle(config, keyPair);
    const tokens = await client.genericGrantRequest(config, GRANT, { ...(await form()), audience: 'registry.acme.internal' }, { DPoP: dpop });
    expect(tokens.token_type).toBe('dpop');
    expect(decodeJwt(tokens.access_token).cnf).toEqual({ jkt: await calculateJwkThumbprint(await exportJWK(keyPair.publicKey)) });

    const app = express();
    app.use(auth({ issuer: served.url, jwksUri: `${served.url}/.well-known/jwks.json`, audience: 'registry.acme.internal', dpop: { enabled: true, required: true } }));
    app.get('/artifacts', (req, res) => void res.json({ sub: req.auth?.payload.sub }));
    app.use(((error, _req, res, _next) => void res.status((error as { status?: number }).status ?? 500).end()) as express.ErrorRequestHandler);
    const server = createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/artifacts`);
      const ok = await client.fetchProtectedResource(config, tokens.access_token, url, 'GET', undefined, undefined, { DPoP: dpop });
      expect(ok.status).toBe(200);
      expect(await ok.json()).toEqual({ sub: 'repo:acme/app:ref:refs/heads/main' });
      expect((await fetch(url, { headers: { authorization: `Bearer ${tokens.access_token}` } })).status).toBe(400);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
