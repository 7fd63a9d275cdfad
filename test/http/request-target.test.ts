import { connect } from 'node:net';
import { exportJWK, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signDpopProof } from '../../src/dpop/index.js';
import { answerUnreadable } from '../../src/http/errors.js';
import { BROKER_ISSUER, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { allEvents } from '../helpers/records.js';

/**
 * Requests as the bytes a client may send, which supertest cannot: a request target with a
 * fragment or in absolute form (RFC 9112 section 3.2), a body that is not UTF-8, an encoding the
 * broker does not read, headers past what node reads. Each is answered as its endpoint answers
 * refusals (problem+json under /v1, an OAuth error under /oauth2), never a 500, nothing recorded.
 */

let t: TestBroker;
let port: number;
let close: () => Promise<void>;
let pipeline: string;
beforeAll(async () => {
  t = await startTestBroker();
  const { createServer } = await import('node:http');
  const server = createServer(t.broker.app);
  server.on('clientError', answerUnreadable);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as { port: number }).port;
  close = () => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
  pipeline = await t.as.pipeline();
});
afterAll(async () => {
  await close();
  await t.close();
});

/** One request of exactly these bytes; its status, content type and JSON body. */
function send(head: string, body: Buffer | string = ''): Promise<{ status: number; type: string; body: Record<string, unknown> }> {
  const bytes = Buffer.isBuffer(body) ? body : Buffer.from(body);
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(Buffer.concat([Buffer.from(`${head}Connection: close\r\nContent-Length: ${bytes.length}\r\n\r\n`, 'latin1'), bytes])));
    const chunks: Buffer[] = [];
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const [headers = '', payload = ''] = text.split('\r\n\r\n');
      resolve({ status: Number(headers.slice(9, 12)), type: /\r\ncontent-type: ([^;\r\n]+)/i.exec(headers)?.[1] ?? '', body: JSON.parse(payload || '{}') });
    });
  });
}

const request = JSON.stringify({ task_id: 'raw', scopes: ['artifacts:read'], audience: 'registry.acme.internal' });
const exchange = () =>
  new URLSearchParams({ grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: pipeline, subject_token_type: 'urn:ietf:params:oauth:token-type:jwt', scope: 'artifacts:read', audience: 'registry.acme.internal', task_id: 'raw' }).toString();
const proofFor = async (path: string) => {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  return signDpopProof({ alg: 'ES256', privateKey, publicJwk: await exportJWK(publicKey) }, { method: 'POST', url: `${BROKER_ISSUER}${path}`, now: t.clock() });
};

describe('a request target', () => {
  it('with a fragment names the path before it: a DPoP proof for that path binds the token, on /v1 and /oauth2', async () => {
    const v1 = await send(`POST /v1/credentials#\\ HTTP/1.1\r\nHost: broker.test\r\nAuthorization: Bearer ${pipeline}\r\nContent-Type: application/json\r\nDPoP: ${await proofFor('/v1/credentials')}\r\n`, request);
    expect(v1.status, JSON.stringify(v1.body)).toBe(201);
    expect(v1.body.token_type).toBe('DPoP');
    const oauth = await send(`POST /oauth2/token#\\ HTTP/1.1\r\nHost: broker.test\r\nContent-Type: application/x-www-form-urlencoded\r\nDPoP: ${await proofFor('/oauth2/token')}\r\n`, exchange());
    expect(oauth.status, JSON.stringify(oauth.body)).toBe(200);
    expect(oauth.body.token_type).toBe('DPoP');
  });

  it('in absolute form is the same endpoint: OAuth errors under /oauth2, and a DPoP proof for its path binds the token', async () => {
    const refused = await send('POST http://broker.test/oauth2/token HTTP/1.1\r\nHost: broker.test\r\nContent-Type: application/x-www-form-urlencoded\r\n', 'grant_type=urn:ietf:params:oauth:grant-type:token-exchange&subject_token=x&subject_token_type=urn:ietf:params:oauth:token-type:jwt&task_id=t');
    expect(refused.status).toBe(400);
    expect(refused.type).toBe('application/json');
    expect(refused.body.error).toBe('invalid_request');
    const bound = await send(`POST http://broker.test/oauth2/token HTTP/1.1\r\nHost: broker.test\r\nContent-Type: application/x-www-form-urlencoded\r\nDPoP: ${await proofFor('/oauth2/token')}\r\n`, exchange());
    expect(bound.status, JSON.stringify(bound.body)).toBe(200);
    expect(bound.body.token_type).toBe('DPoP');
  });
});

describe('a body', () => {
  it('whose bytes are not UTF-8 is refused (400), never stored with U+FFFD for what was sent, as JSON and as a form', async () => {
    const before = (await allEvents(t)).length;
    for (const bytes of [[0xed, 0xa0, 0x80], [0xc0, 0x80], [0xff]]) {
      const json = Buffer.concat([Buffer.from('{"task_id":"a'), Buffer.from(bytes), Buffer.from('","scopes":["artifacts:read"],"audience":"registry.acme.internal"}')]);
      const v1 = await send(`POST /v1/credentials HTTP/1.1\r\nHost: broker.test\r\nAuthorization: Bearer ${pipeline}\r\nContent-Type: application/json\r\n`, json);
      expect(v1.status).toBe(400);
      expect(v1.body).toMatchObject({ type: 'urn:jit-broker:problem:invalid_request', detail: 'The request body must be UTF-8.' });
      const form = Buffer.concat([Buffer.from(`${exchange()}&justification=a`), Buffer.from(bytes)]);
      const oauth = await send('POST /oauth2/token HTTP/1.1\r\nHost: broker.test\r\nContent-Type: application/x-www-form-urlencoded\r\n', form);
      expect(oauth.status).toBe(400);
      expect(oauth.body).toMatchObject({ error: 'invalid_request', error_description: 'The request body must be UTF-8.' });
    }
    expect((await allEvents(t)).length).toBe(before);
  });

  it('in an encoding the broker does not read is refused naming the encoding, not the charset', async () => {
    const response = await send(`POST /v1/credentials HTTP/1.1\r\nHost: broker.test\r\nAuthorization: Bearer ${pipeline}\r\nContent-Type: application/json\r\nContent-Encoding: x-unknown\r\n`, request);
    expect(response.status).toBe(400);
    expect(response.body.detail).toMatch(/Content-Encoding/);
  });
});

describe('headers past what node reads', () => {
  it('are answered 431 as the endpoint answers refusals: an OAuth error under /oauth2, a problem elsewhere', async () => {
    const big = `X-Big: ${'a'.repeat(20_000)}\r\n`;
    const oauth = await send(`POST /oauth2/token HTTP/1.1\r\nHost: broker.test\r\n${big}`);
    expect(oauth.status).toBe(431);
    expect(oauth.type).toBe('application/json');
    expect(oauth.body).toEqual({ error: 'invalid_request', error_description: expect.stringMatching(/headers/) });
    const v1 = await send(`POST /v1/credentials HTTP/1.1\r\nHost: broker.test\r\n${big}`);
    expect(v1.status).toBe(431);
    expect(v1.body).toMatchObject({ type: 'urn:jit-broker:problem:invalid_request', status: 431 });
  });
});
