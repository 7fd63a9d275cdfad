import { connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { baseConfig, createTestIssuers } from '../helpers/broker.js';
import { startBrokerProcess, type BrokerProcess } from '../helpers/process.js';
import { tempDir } from '../helpers/temp.js';

/**
 * One caller must not hold the broker's connections by trickling its request: `listen.requestTimeout`
 * bounds how long a whole request (headers and body) may take to arrive, on a real process.
 */

let broker: (BrokerProcess & { url: string }) | undefined;
afterEach(() => {
  broker?.child.kill('SIGKILL');
});

/** How long (ms) the server keeps a socket that sends `head`, then `drip()` every 500 ms; `cap` if it never closes it. */
function held(url: string, head: string, drip: () => string, cap: number): Promise<number> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = connect(Number(port), hostname, () => head && socket.write(head));
    const timer = setInterval(() => {
      if (Date.now() - started < cap) {
        if (!socket.destroyed) socket.write(drip());
        return;
      }
      socket.destroy();
      resolve(cap);
    }, 500);
    socket.on('data', () => {});
    socket.on('error', () => {});
    socket.on('close', () => {
      clearInterval(timer);
      resolve(Date.now() - started);
    });
  });
}

describe('a slow caller', () => {
  it('loses its connection after requestTimeout: a body that never ends, headers that never end, or nothing at all; what node cannot read is a problem with a request id', { timeout: 60_000 }, async () => {
    const dir = tempDir('jit-slow-callers-');
    broker = await startBrokerProcess(dir, 'broker', { ...baseConfig(dir, await createTestIssuers()), listen: { host: '127.0.0.1', port: 0, workers: 1, requestTimeout: '2s' } });
    const cap = 20_000; // far above 2 s and the once-a-second check: a broker that never closes them reaches it
    const form = 'POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n';
    const [body, headers, silent] = await Promise.all([
      held(broker.url, form, () => '1\r\na\r\n', cap),
      held(broker.url, 'GET /healthz HTTP/1.1\r\nHost: x\r\n', () => `X-${Math.random().toString(36).slice(2)}: a\r\n`, cap),
      held(broker.url, '', () => '', cap),
    ]);
    expect({ body, headers, silent }).toEqual({ body: expect.any(Number), headers: expect.any(Number), silent: expect.any(Number) });
    expect(Math.max(body, headers, silent)).toBeLessThan(cap);
    // Callers who send their requests are served as ever.
    expect((await fetch(`${broker.url}/healthz`)).status).toBe(200);

    // What node cannot read is answered as any refusal: a problem, with a request id.
    const { hostname, port } = new URL(broker.url);
    const answer = await new Promise<string>((resolve) => {
      let text = '';
      const socket = connect(Number(port), hostname, () => socket.write(`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`));
      socket.on('data', (chunk) => (text += chunk.toString()));
      socket.on('error', () => {});
      socket.on('close', () => resolve(text));
    });
    expect(answer).toMatch(/^HTTP\/1\.1 431 /);
    expect(answer).toMatch(/\r\nX-Request-Id: [0-9a-f-]{36}\r\n/i);
    expect(JSON.parse(answer.split('\r\n\r\n')[1] as string)).toMatchObject({ type: 'urn:jit-broker:problem:invalid_request', status: 431 });
  });
});
