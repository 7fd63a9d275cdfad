import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jit } from '../helpers/jit-process.js';
import { tempDir } from '../helpers/temp.js';

/**
 * A "broker" that redirects: a 307 or 308 would replay the call, identity tokens and all, to
 * wherever it points. The CLI follows none and says where it pointed, by origin only.
 */

const SUBJECT = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzdWJqZWN0In0.c3ViamVjdC1zaWc';
const ACTOR = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.YWdlbnQtc2ln';

/** A server on a loopback port; `answer` gives each request's status and headers. */
async function serve(answer: (url: string) => [number, Record<string, string>]) {
  const seen: string[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      seen.push(`${req.method} ${req.url} ${req.headers.authorization ?? ''} ${body}`);
      const [status, headers] = answer(req.url ?? '/');
      res.writeHead(status, headers).end();
    });
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    close: () => new Promise<void>((done) => { server.closeAllConnections(); server.close(() => done()); }),
  };
}

let elsewhere: Awaited<ReturnType<typeof serve>>;
let front: Awaited<ReturnType<typeof serve>>;
let status = 307;
beforeAll(async () => {
  elsewhere = await serve(() => [200, { 'content-type': 'application/json' }]);
  // localhost rather than 127.0.0.1: another origin, as fetch counts origins.
  front = await serve((url) => [status, { location: `http://localhost:${elsewhere.port}${url}?leaked=query-text` }]);
});
afterAll(async () => {
  await front?.close();
  await elsewhere?.close();
});

describe('a broker URL that redirects', () => {
  it.each([307, 308, 302])('%i: is not followed by a call or a token exchange, and only the origin it points to is named', async (code) => {
    status = code;
    const dir = tempDir('jit-redirect-');
    writeFileSync(join(dir, 'actor.jwt'), ACTOR);
    const env = { BROKER_URL: `http://127.0.0.1:${front.port}`, BROKER_IDENTITY_TOKEN: SUBJECT };
    const request = ['request', '--scope', 'artifacts:read', '--audience', 'registry.acme.internal', '--task', 't', '--wait', '0'];
    const results = [await jit(['requests'], { env }), await jit(request, { env }), await jit([...request, '--actor-token', join(dir, 'actor.jwt')], { env })];

    expect(elsewhere.seen).toEqual([]);
    for (const result of results) {
      expect(result).toMatchObject({ code: 1, stdout: '' });
      expect(result.stderr).toMatch(
        new RegExp(`^jit \\w+: the broker at http://127\\.0\\.0\\.1:${front.port} answered ${code}, a redirect \\(to http://localhost:${elsewhere.port}\\): not followed, as it would take the identity token there; give the broker's own URL\\n$`),
      );
    }
    // The exchange, tokens in its form, went to the broker's URL alone.
    expect(front.seen.some((line) => line.includes(`subject_token=${SUBJECT}`) && line.includes(`actor_token=${ACTOR}`))).toBe(true);
  });
});
