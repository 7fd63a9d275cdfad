/**
 * Times the hot path: identity token in, signed credential out, over real HTTP to an in-process
 * broker on a real SQLite file (synchronous=FULL, so every token waits for its record to be
 * durable). Then times a resource server verifying those tokens offline with the package's
 * verifier.
 *
 *   npm run bench:issue                 # 2,000 issuances, 8 callers at a time
 *   npm run bench:issue -- 5000 16      # more, or more at once
 *
 * Prints a Markdown table (the README's figures come from it). Nothing here runs in `npm test`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { baseConfig, createTestIssuers } from '../test/helpers/broker.js';
import { createBroker } from '../src/broker.js';
import { parseConfig } from '../src/config/index.js';
import { createLogger } from '../src/observability/index.js';
import { createBrokerVerifier } from '../src/verifier/index.js';

const TOTAL = Number(process.argv[2] ?? 2_000);
const CALLERS = Number(process.argv[3] ?? 8);

const dir = mkdtempSync(join(tmpdir(), 'jit-bench-issue-'));
const issuers = await createTestIssuers();
const config = parseConfig('bench', baseConfig(dir, issuers));
const broker = await createBroker({ config, logger: createLogger({ level: 'silent' }) });
const server = createServer(broker.app);
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

// One identity per caller, as a pipeline step would hold; verifying it is part of every request.
const identities = await Promise.all(
  Array.from({ length: CALLERS }, (_, i) => issuers.ci.token(`repo:acme/app-${i}:ref:refs/heads/main`, { repository: `acme/app-${i}` })),
);

async function issue(identity: string, n: number): Promise<string> {
  const response = await fetch(`${base}/v1/credentials`, {
    method: 'POST',
    headers: { authorization: `Bearer ${identity}`, 'content-type': 'application/json' },
    body: JSON.stringify({ task_id: `bench-${n}`, scopes: ['artifacts:read'], audience: 'registry.acme.internal' }),
  });
  const body = (await response.json()) as { access_token?: string };
  if (response.status !== 201 || !body.access_token) throw new Error(`issuance ${n} answered ${response.status}`);
  return body.access_token;
}

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
const ms = (value: number) => `${value.toFixed(1)} ms`;

// Warm up the JIT, the statement cache and the connection pool before measuring.
for (let i = 0; i < 50; i += 1) await issue(identities[0] as string, -i);

const latencies: number[] = [];
const tokens: string[] = [];
let next = 0;
const started = performance.now();
await Promise.all(
  identities.map(async (identity) => {
    while (next < TOTAL) {
      const n = next;
      next += 1;
      const sent = performance.now();
      tokens.push(await issue(identity, n));
      latencies.push(performance.now() - sent);
    }
  }),
);
const issueSeconds = (performance.now() - started) / 1000;
latencies.sort((a, b) => a - b);

const verifier = createBrokerVerifier({ issuer: config.issuer, brokerUrl: base, audience: 'registry.acme.internal' });
await verifier.verify(tokens[0] as string); // fetches the JWKS once
const verifyStarted = performance.now();
for (const token of tokens) await verifier.verify(token, { requiredScopes: ['artifacts:read'] });
const verifyMicros = ((performance.now() - verifyStarted) * 1000) / tokens.length;

console.log(`| what (${TOTAL} issuances, ${CALLERS} callers at a time) | result |`);
console.log('| --- | --- |');
console.log(`| issuances per second | ${Math.round(TOTAL / issueSeconds)} |`);
console.log(`| latency p50 / p95 / p99 | ${ms(percentile(latencies, 50))} / ${ms(percentile(latencies, 95))} / ${ms(percentile(latencies, 99))} |`);
console.log(`| offline verification, per token | ${verifyMicros.toFixed(0)} µs |`);

server.close();
await broker.close();
rmSync(dir, { recursive: true, force: true });
