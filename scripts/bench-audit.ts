/**
 * Seeds a database with a million issuances and times what auditors ask of it: filtered
 * pages, a deep page, chain verification and full NDJSON/CSV exports through the HTTP API.
 *
 *   npm run bench:audit                 # 1,000,000 issuances
 *   npm run bench:audit -- 200000       # fewer, for a quick look
 *
 * Prints a Markdown table (the README's figures come from it). Nothing here runs in `npm test`.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestIssuers, baseConfig } from '../test/helpers/broker.js';
import { createBroker } from '../src/broker.js';
import { parseConfig } from '../src/config/index.js';
import { createLogger } from '../src/observability/index.js';
import { createAuditService, verifyStoredChain } from '../src/audit/index.js';
import type { IssuanceFilter } from '../src/store/index.js';
import Database from 'better-sqlite3';

const TOTAL = Number(process.argv[2] ?? 1_000_000);
const SUBJECTS = 5_000;
const SCOPES = Array.from({ length: 40 }, (_, i) => `service-${i}:${i % 2 ? 'read' : 'write'}`);
const DAY = 86_400_000;
const START = Date.parse('2026-01-01T00:00:00Z');
const SPAN = 300 * DAY;

const dir = mkdtempSync(join(tmpdir(), 'jit-bench-'));
const issuers = await createTestIssuers();
const config = parseConfig('bench', baseConfig(dir, issuers));
const now = START + SPAN + DAY;
const broker = await createBroker({ config, clock: () => now, logger: createLogger({ level: 'silent' }) });
// Seeded behind the broker's back, straight into its SQLite file: a million requests through the API would take an hour.
const db = new Database(config.database);

// --- Seed -----------------------------------------------------------------------------------
const seedStarted = performance.now();
const insertRequest = db.prepare(`INSERT INTO requests (id, requester_iss, requester_sub, requester_idp, initiator, task_id, scopes,
  audience, ttl_seconds, justification, break_glass, policy_ids, digest, approvals_required, status, created_at, expires_at,
  decided_at, issued_at, ended_at, revoke_reason) VALUES (?, ?, ?, 'ci', NULL, ?, ?, ?, 600, ?, ?, '[]', ?, ?, ?, ?, ?, NULL, ?, ?, ?)`);
const insertScope = db.prepare('INSERT INTO issued_scopes (scope, issued_at, request_id) VALUES (?, ?, ?)');
const insertIssuance = db.prepare('INSERT INTO issuances (jti, request_id, token_sha256, kid, issued_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)');
const insertApproval = db.prepare(`INSERT INTO approvals (request_id, approver_iss, approver_sub, decision, reason, digest, at)
  VALUES (?, 'https://sso.test', ?, 'approve', 'ok', '', ?)`);
const random = Math.random;
const pick = <T>(items: readonly T[]) => items[Math.floor(random() * items.length)] as T;
// Each issuance's id, for its token.issued event: the issuance listing reads how far the chain had grown.
const requestIds: string[] = [];
const seedBatch = db.transaction((from: number, to: number) => {
  for (let i = from; i < to; i += 1) {
    const id = randomUUID();
    requestIds.push(id);
    const issuedAt = START + Math.floor((i / TOTAL) * SPAN);
    const scopes = [...new Set([pick(SCOPES), ...(random() < 0.5 ? [pick(SCOPES)] : [])])];
    const breakGlass = random() < 0.02;
    const revoked = random() < 0.05;
    const approved = random() < 0.1;
    insertRequest.run(
      id, 'https://ci.test', `repo:acme/app-${Math.floor(random() * SUBJECTS)}:ref:refs/heads/main`, `task-${i}`,
      JSON.stringify(scopes), 'registry.acme.internal', breakGlass ? 'incident, see the pager log' : null, breakGlass ? 1 : 0,
      'x'.repeat(64), approved ? 1 : 0, revoked ? 'revoked' : 'expired', issuedAt, issuedAt + 600_000, issuedAt,
      issuedAt + (revoked ? 60_000 : 600_000), revoked ? 'task_completed' : null,
    );
    for (const scope of scopes) insertScope.run(scope, issuedAt, id);
    insertIssuance.run(randomUUID(), id, 'f'.repeat(64), 'bench', issuedAt, issuedAt + 600_000);
    if (approved) insertApproval.run(id, `approver-${i % 50}`, issuedAt - 1_000);
  }
});
for (let i = 0; i < TOTAL; i += 50_000) seedBatch.immediate(i, Math.min(TOTAL, i + 50_000));
const EVENTS = Math.min(TOTAL, 1_000_000);
for (let i = 0; i < EVENTS; i += 20_000) {
  const batch = Array.from({ length: Math.min(EVENTS, i + 20_000) - i }, (_, k) => ({
    type: 'token.issued' as const,
    requestId: requestIds[i + k] as string,
    data: { jti: `j${i + k}` },
  }));
  await broker.store.append(batch);
}
db.exec('ANALYZE');
const seedSeconds = (performance.now() - seedStarted) / 1000;

// --- Measure ----------------------------------------------------------------------------------
const auditor = {
  iss: 'https://sso.test', sub: 'ivy', idp: 'sso', kind: 'person' as const, claims: {}, roles: new Set(['auditor' as const]),
};
const rows: [string, string][] = [];
const median = (values: number[]) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;
async function time(label: string, run: () => Promise<{ items: unknown[] }>, repeat = 5) {
  const samples: number[] = [];
  let returned = 0;
  for (let i = 0; i < repeat; i += 1) {
    const started = performance.now();
    returned = (await run()).items.length;
    samples.push(performance.now() - started);
  }
  rows.push([`${label}: ${returned} rows`, `${median(samples).toFixed(1)} ms`]);
}
const audit = createAuditService({ store: broker.store, clock: () => now, keyring: broker.keyring, issuer: broker.config.issuer, settings: broker.settings.current });
const page = (filter: IssuanceFilter, cursor?: string) => audit.issuances(auditor, filter, cursor, 100);

const sampleSubject = 'repo:acme/app-1234:ref:refs/heads/main';
await time('first page, no filter', () => page({}));
await time('one subject (~200 of 1M)', () => page({ subject: sampleSubject }));
await time('one scope (~37k of 1M)', () => page({ scope: 'service-7:read' }));
await time('status=revoked', () => page({ status: 'revoked' }));
await time('break_glass=true', () => page({ breakGlass: true }));
await time('one day, since/until', () => page({ since: START + 100 * DAY, until: START + 101 * DAY }));
await time('subject + scope', () => page({ subject: sampleSubject, scope: 'service-7:read' }));
await time('subject + break_glass', () => page({ subject: sampleSubject, breakGlass: true }));
await time('scope + break_glass', () => page({ scope: 'service-7:read', breakGlass: true }));
await time('scope + status=revoked', () => page({ scope: 'service-7:read', status: 'revoked' }));
await time('scope + status=issued (none live)', () => page({ scope: 'service-7:read', status: 'issued' }));
await time('scope + one day', () => page({ scope: 'service-7:read', since: START + 100 * DAY, until: START + 101 * DAY }));
const middle = (await audit.issuances(auditor, { since: START + SPAN / 2 }, undefined, 1)).next_cursor as string;
await time('a page halfway through (cursor)', () => page({}, middle));
const events = await (async () => {
  const started = performance.now();
  const verdict = await verifyStoredChain(broker.store.events);
  rows.push([`verify chain (${EVENTS.toLocaleString('en')} events)`, `${((performance.now() - started) / 1000).toFixed(2)} s`]);
  return verdict;
})();
if (!events.ok) throw new Error('the seeded chain does not verify');

// Full exports through the real HTTP app, read by a real client.
const server = createServer(broker.app);
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address() as AddressInfo;
const token = await issuers.sso.token('ivy', { groups: ['auditors'], preferred_username: 'ivy' }, { now });
rows.push(['RSS before the exports', `${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`]);
let peakRss = 0;
const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 50);
for (const format of ['ndjson', 'csv']) {
  const started = performance.now();
  const response = await fetch(`http://127.0.0.1:${port}/v1/audit/issuances?format=${format}`, { headers: { authorization: `Bearer ${token}` } });
  if (!response.ok) throw new Error(`export ${format}: HTTP ${response.status} ${await response.text()}`);
  let bytes = 0;
  let lines = 0;
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
    bytes += chunk.length;
    for (const byte of chunk) if (byte === 10) lines += 1;
  }
  rows.push([`full export, ${format} (${(bytes / 2 ** 20).toFixed(0)} MiB, ${lines.toLocaleString('en')} lines)`, `${((performance.now() - started) / 1000).toFixed(1)} s`]);
}
clearInterval(sampler);
rows.push(['peak RSS during the exports', `${(peakRss / 2 ** 20).toFixed(0)} MiB`]);
server.close();

console.log(`\n${TOTAL.toLocaleString('en')} issuances seeded in ${seedSeconds.toFixed(0)} s (node ${process.version}, ${process.platform}/${process.arch})\n`);
console.log('| what (a page is 100 rows; pages are the median of 5 runs) | time |');
console.log('| --- | --- |');
for (const [label, value] of rows) console.log(`| ${label} | ${value} |`);

await broker.close();
rmSync(dir, { recursive: true, force: true });
