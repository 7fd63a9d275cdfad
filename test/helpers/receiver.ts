import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Delivery {
  path: string;
  headers: IncomingHttpHeaders;
  /** The body exactly as received, for signature checks. */
  raw: string;
  body: Record<string, unknown>;
}

/** A webhook receiver on loopback that answers with `status()` (or never, when it returns 0). */
export async function startReceiver(status: () => number = () => 204) {
  const deliveries: Delivery[] = [];
  let attempts = 0;
  const server = createServer((req, res) => {
    let text = '';
    req.on('data', (chunk: Buffer) => (text += chunk.toString()));
    req.on('end', () => {
      attempts += 1;
      const code = status();
      if (code === 0) return; // hang
      // A delivery the broker sent again, having given up waiting for a slow answer, is the same
      // delivery: a Standard Webhooks receiver takes each webhook-id once.
      const id = req.headers['webhook-id'];
      const seen = id !== undefined && deliveries.some((d) => d.headers['webhook-id'] === id);
      if (code < 300 && !seen) deliveries.push({ path: req.url ?? '', headers: req.headers, raw: text, body: JSON.parse(text) });
      res.writeHead(code).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: (path: string) => `http://127.0.0.1:${port}${path}`,
    deliveries,
    get attempts() {
      return attempts;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
