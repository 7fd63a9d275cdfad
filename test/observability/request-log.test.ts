import { afterEach, describe, expect, it } from 'vitest';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';

/** The request log names who asked (issuer name and subject), never what they proved it with. */
describe('request log lines', () => {
  let t: TestBroker;
  afterEach(async () => t?.close());
  const completed = () =>
    t.logs.map((line) => JSON.parse(line) as Record<string, any>).filter((line) => line.msg === 'request completed');

  it('name the verified caller of /v1 and /oauth2 endpoints, and carry no token', async () => {
    t = await startTestBroker();
    const identity = await t.as.pipeline();
    const issued = await t.http.post('/v1/credentials').set(bearer(identity)).send({ task_id: 'log', scopes: ['artifacts:read'], audience: 'registry.acme.internal' });
    expect(issued.status).toBe(201);
    const exchanged = await t.http.post('/oauth2/token').type('form').send({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: identity,
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      scope: 'artifacts:read',
      audience: 'registry.acme.internal',
      task_id: 'log-2',
    });
    expect(exchanged.status).toBe(200);
    const introspector = await t.as.pipeline({}, 'resource-server:registry');
    await t.http.post('/oauth2/introspect').set(bearer(introspector)).type('form').send({ token: issued.body.access_token });

    const [viaV1, viaExchange, viaIntrospect] = completed();
    const pipeline = { issuer: 'ci', sub: 'repo:acme/app:ref:refs/heads/main' };
    expect(viaV1).toMatchObject({ req: { method: 'POST', path: '/v1/credentials' }, res: { status: 201 }, caller: pipeline });
    expect(viaExchange).toMatchObject({ req: { path: '/oauth2/token' }, res: { status: 200 }, caller: pipeline });
    expect(viaIntrospect).toMatchObject({ req: { path: '/oauth2/introspect' }, caller: { issuer: 'ci', sub: 'resource-server:registry' } });

    const everything = t.logs.join('\n');
    for (const secret of [identity, introspector, issued.body.access_token, exchanged.body.access_token]) {
      expect(everything).not.toContain(secret);
      expect(everything).not.toContain((secret as string).split('.')[1]); // not even the claims part
    }
  });

  it('name no caller when the identity was not accepted', async () => {
    t = await startTestBroker();
    await t.http.get('/v1/approvals').set(bearer('not.a.token'));
    await t.http.get('/v1/approvals');
    const lines = completed();
    expect(lines).toHaveLength(2);
    for (const line of lines) {
      expect(line.res.status).toBe(401);
      expect(line).not.toHaveProperty('caller');
    }
  });
});
