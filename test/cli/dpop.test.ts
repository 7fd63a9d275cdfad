import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { calculateJwkThumbprint, decodeProtectedHeader, type JWK } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { dpopKeyFile } from '../../src/cli/config-dir.js';
import { verifyDpopProof } from '../../src/dpop/index.js';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/temp.js';

/**
 * `jit request --dpop` and `jit collect --dpop`: the CLI makes its DPoP key once (mode 0600,
 * beside its profile), reuses it, and sends a fresh proof by it with each call that issues a
 * token, which the broker's own proof rules (src/dpop) accept for that method and URL. The
 * broker here is a stand-in that records what it receives and answers as the broker does.
 */

interface Received {
  method: string;
  path: string;
  dpop: string[];
}

let server: Server;
let broker: string;
let received: Received[];
let tokenType: string;

beforeAll(async () => {
  server = createServer((req, res) => {
    received.push({ method: req.method ?? '', path: req.url ?? '', dpop: req.headersDistinct.dpop ?? [] });
    req.resume();
    req.on('end', () => {
      const issued = { request_id: 'req-1', status: 'issued', access_token: 'a.b.c', token_type: tokenType, expires_in: 300, scopes: ['artifacts:read'], audience: 'registry', break_glass: false };
      const reply = (status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      if (req.method === 'POST' && req.url === '/v1/credentials') return reply(201, issued);
      if (req.method === 'GET' && req.url === '/v1/credentials/req-2') {
        return reply(200, { request_id: 'req-2', status: 'approved', approvals: [], approvals_required: 1, expires_at: new Date().toISOString() });
      }
      if (req.method === 'POST' && req.url === '/v1/credentials/req-2/token') return reply(201, { ...issued, request_id: 'req-2' });
      return reply(404, { type: 'urn:jit-broker:problem:not_found', detail: 'no such thing' });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  broker = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

let env: NodeJS.ProcessEnv;
beforeEach(() => {
  received = [];
  tokenType = 'DPoP';
  env = { JIT_CONFIG_DIR: join(tempDir('jit-dpop-'), 'jit'), BROKER_URL: broker, BROKER_IDENTITY_TOKEN: 'identity.jwt.token' };
});

const request = ['request', '--scope', 'artifacts:read', '--audience', 'registry', '--task', 'build-1'];

/** The proof of a recorded call, checked by the broker's own rules for that call's method and URL; its key's thumbprint and jti. */
const verified = async (call: Received | undefined) => {
  expect(call?.dpop).toHaveLength(1);
  const proof = call?.dpop[0] as string;
  const checked = await verifyDpopProof(proof, { method: call?.method as string, url: `${broker}${call?.path}`, algorithms: ['ES256'], now: Date.now(), clockSkewMs: 30_000 });
  return { ...checked, jwk: decodeProtectedHeader(proof).jwk as JWK };
};

describe('jit request --dpop', () => {
  it('sends a fresh proof for POST /v1/credentials, by a key made once with mode 0600 and reused', async () => {
    const first = await runCli([...request, '--dpop'], env);
    expect(first).toMatchObject({ code: 0, stdout: 'a.b.c\n', stderr: '' });
    const path = dpopKeyFile(env);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(join(env.JIT_CONFIG_DIR as string)).mode & 0o777).toBe(0o700);
    const kept = readFileSync(path, 'utf8');
    const privateJwk = JSON.parse(kept) as JWK;
    expect(privateJwk).toMatchObject({ kty: 'EC', crv: 'P-256', d: expect.any(String) });

    const second = await runCli([...request, '--dpop', '--json'], env);
    expect(second.code).toBe(0);
    expect(readFileSync(path, 'utf8')).toBe(kept);

    const [a, b] = [await verified(received[0]), await verified(received[1])];
    const { d: _d, ...publicJwk } = privateJwk;
    expect(a.jkt).toBe(await calculateJwkThumbprint(publicJwk));
    expect(b.jkt).toBe(a.jkt);
    expect(b.jti).not.toBe(a.jti);
    // The proof carries the public key alone, and nothing says the private one.
    expect(Object.keys(a.jwk).sort()).toEqual(['crv', 'kty', 'x', 'y']);
    for (const output of [first.stdout, first.stderr, second.stdout, second.stderr]) expect(output).not.toContain(privateJwk.d);
  });

  it('makes its key in a private config dir: one already there, open to others, is tightened to 0700 first', async () => {
    const dir = env.JIT_CONFIG_DIR as string;
    mkdirSync(dir);
    chmodSync(dir, 0o755);
    expect((await runCli([...request, '--dpop'], env)).code).toBe(0);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(dpopKeyFile(env)).mode & 0o777).toBe(0o600);
  });

  it('sends none without --dpop, and makes no key', async () => {
    expect((await runCli(request, env)).code).toBe(0);
    expect(received).toEqual([{ method: 'POST', path: '/v1/credentials', dpop: [] }]);
    expect(existsSync(dpopKeyFile(env))).toBe(false);
  });

  it('warns when the broker hands out an unbound token all the same', async () => {
    tokenType = 'Bearer';
    const result = await runCli([...request, '--dpop'], env);
    expect(result).toMatchObject({ code: 0, stdout: 'a.b.c\n' });
    expect(result.stderr).toBe('warning: the broker did not bind the token to the DPoP key (token_type Bearer): a copy of it works without the key\n');
  });

  it('refuses a key file that others can read, sending nothing', async () => {
    expect((await runCli([...request, '--dpop'], env)).code).toBe(0);
    chmodSync(dpopKeyFile(env), 0o644);
    received = [];
    const refused = await runCli([...request, '--dpop'], env);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^jit request: cannot use the DPoP key: .*dpop\.jwk\.json is readable by other users \(mode 644\); chmod 600 it\n$/);
    expect(received).toEqual([]);
  });

  it('refuses a key file that is not a key, without showing what it holds', async () => {
    expect((await runCli([...request, '--dpop'], env)).code).toBe(0);
    const path = dpopKeyFile(env);
    const secret = JSON.parse(readFileSync(path, 'utf8')).d as string;
    writeFileSync(path, `{"kty":"EC","d":"${secret}`, { mode: 0o600 }); // cut short
    const refused = await runCli([...request, '--dpop'], env);
    expect(refused).toMatchObject({ code: 1, stderr: `jit request: ${path} is not a JWK (JSON); move it away and a new key is made\n` });
    expect(refused.stderr).not.toContain(secret);
  });
});

describe('jit collect --dpop', () => {
  it('reads the request without a proof and collects its token with a fresh one for POST /v1/credentials/{id}/token', async () => {
    expect((await runCli([...request, '--dpop'], env)).code).toBe(0);
    const collected = await runCli(['collect', 'req-2', '--dpop'], env);
    expect(collected).toMatchObject({ code: 0, stdout: 'a.b.c\n' });
    expect(received.map(({ method, path, dpop }) => [method, path, dpop.length])).toEqual([
      ['POST', '/v1/credentials', 1],
      ['GET', '/v1/credentials/req-2', 0],
      ['POST', '/v1/credentials/req-2/token', 1],
    ]);
    const [requested, collecting] = [await verified(received[0]), await verified(received[2])];
    expect(collecting.jkt).toBe(requested.jkt);
    // A proof for the request is not one for the collection.
    await expect(
      verifyDpopProof(received[0]?.dpop[0] as string, { method: 'POST', url: `${broker}/v1/credentials/req-2/token`, algorithms: ['ES256'], now: Date.now(), clockSkewMs: 30_000 }),
    ).rejects.toMatchObject({ problem: 'url' });
  });
});
