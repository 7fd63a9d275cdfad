import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startTestBroker, type TestBroker, type TestBrokerOptions } from '../helpers/broker.js';

/**
 * A test broker served on a loopback port whose `issuer` is that very URL, as in a deployment:
 * third-party clients discover it, compare `iss` with where they found it, and fetch its JWKS.
 */
export interface ServedBroker {
  t: TestBroker;
  url: string;
  close(): Promise<void>;
}

export async function startServedBroker(options: TestBrokerOptions = {}): Promise<ServedBroker> {
  let t: TestBroker | undefined;
  // Through `t.broker.app` at each request, so a restarted broker is served on the same URL.
  const server = createServer((req, res) => (t ? t.broker.app(req, res) : res.writeHead(503).end()));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    t = await startTestBroker({
      ...options,
      configure: (config) => {
        config.issuer = url;
        options.configure?.(config);
      },
    });
  } catch (error) {
    server.close();
    throw error;
  }
  const broker = t;
  return {
    t: broker,
    url,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await broker.close();
    },
  };
}

export const signing = (values: Record<string, unknown>) => (config: Record<string, unknown>) =>
  Object.assign(config.signing as Record<string, unknown>, values);
