/**
 * What bounds the broker on PostgreSQL, measured apart from HTTP (issue 28):
 *
 * 1. The audit chain alone: events per second appended to the one chain by 1, 2 and 3 writers
 *    at once, each a replica's store (its own pool and group-commit batcher), each keeping
 *    `--inflight` appends of an issuance's two events in flight. With 1 in flight every
 *    transaction appends 2 events (no group commit: the chain's cost per transaction); with 64 a
 *    replica's batches are full. The chain is verified afterwards.
 * 2. Round trips per issuance: a broker in this process on PostgreSQL, every statement its pool
 *    sends counted (one `query` of node-postgres is one round trip), while `--issuances`
 *    tokens are issued over HTTP one at a time (each its own batch) and then 48 at a time
 *    (batches of several), by 64 pipeline identities in turn.
 *
 *   npm run bench:chain                          # 5 s per chain run, writers 1,2,3
 *   npm run bench:chain -- --seconds 10 --writers 1,3 --inflight 1,64 --issuances 1000
 *   npm run bench:chain -- --baseline ../jit-broker-1.4   # each run first with that checkout's dist/
 *
 * With --baseline DIR, every measurement is made first with the store and broker built in DIR
 * (another checkout, its dist/ built), then with this one's: a before and after in one run.
 *
 * PostgreSQL is a throwaway embedded server with fsync on (or env DATABASE_URL). Prints Markdown
 * tables on stdout; nothing here runs in `npm test`. Run it alone: the machine's cores are shared.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { verifyStoredChain } from '../src/audit/index.js';
import { createBroker } from '../src/broker.js';
import { parseConfig } from '../src/config/index.js';
import { createLogger } from '../src/observability/index.js';
import { openStore, type AuditEntry, type Store } from '../src/store/index.js';
import { baseConfig, createTestIssuers } from '../test/helpers/broker.js';
import { say } from './bench-http/console.js';
import { startPostgres, type PostgresServer } from './bench-http/postgres.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    writers: { type: 'string', default: '1,2,3' },
    inflight: { type: 'string', default: '1,64' },
    issuances: { type: 'string', default: '600' },
    baseline: { type: 'string' },
  },
});
const list = (text: string) => text.split(',').map((n) => Number(n.trim()));
const SECONDS = Number(values.seconds);
const WRITERS = list(values.writers);
const INFLIGHT = list(values.inflight);
const ISSUANCES = Number(values.issuances);
const IDENTITIES = 64;

/** What a run needs of a build of the broker: this checkout's sources, or a baseline's dist/. */
interface Build {
  name: 'this' | 'baseline';
  openStore: typeof openStore;
  createBroker: typeof createBroker;
  parseConfig: typeof parseConfig;
}
const THIS: Build = { name: 'this', openStore, createBroker, parseConfig };
async function baselineBuild(dir: string): Promise<Build> {
  const load = (path: string) => import(pathToFileURL(join(resolve(dir), 'dist', path)).href);
  return {
    name: 'baseline',
    openStore: (await load('store/index.js')).openStore,
    createBroker: (await load('broker.js')).createBroker,
    parseConfig: (await load('config/index.js')).parseConfig,
  };
}
const BUILDS: Build[] = [...(values.baseline ? [await baselineBuild(values.baseline)] : []), THIS];

const out = (line = '') => process.stdout.write(`${line}\n`);

// --- Round trips: every query of node-postgres, counted in this process ---------------------------

const sent = { queries: 0, transactions: 0 };
const query = pg.Client.prototype.query;
pg.Client.prototype.query = function counted(this: pg.Client, ...args: unknown[]) {
  const text = typeof args[0] === 'string' ? args[0] : (args[0] as { text?: string } | undefined)?.text;
  sent.queries += 1;
  if (text !== undefined && /^\s*BEGIN\b/i.test(text)) sent.transactions += 1;
  return (query as (...a: unknown[]) => unknown).apply(this, args);
} as typeof query;

// --- 1. The chain alone -------------------------------------------------------------------------

/** Two events shaped like an issuance's (`request.created`, `token.issued`), sizes included. */
function issuanceEvents(n: number): AuditEntry[] {
  const actor = { iss: 'https://token.actions.githubusercontent.com', sub: `repo:acme/app:ref:refs/heads/job-${n % IDENTITIES}` };
  const requestId = `0198c0de-0000-7000-8000-${String(n).padStart(12, '0')}`;
  return [
    {
      type: 'request.created',
      actor,
      requestId,
      data: { idp: 'github', task_id: 'bench', scopes: ['artifacts:read'], audience: 'registry.acme.internal', ttl_seconds: 900, justification: null, break_glass: false, approvals_required: 0, digest: 'a'.repeat(64), policy_ids: ['acme-app'], initiator: `octocat-${n % IDENTITIES}` },
    },
    {
      type: 'token.issued',
      actor,
      requestId,
      data: { jti: `0198c0de-1111-7000-8000-${String(n).padStart(12, '0')}`, kid: 'k'.repeat(43), scopes: ['artifacts:read'], audience: 'registry.acme.internal', expires_at: '2026-01-01T00:15:00.000Z' },
    },
  ];
}

interface ChainRun {
  build: Build['name'];
  writers: number;
  inflight: number;
  eventsPerSecond: number;
  eventsPerTransaction: number;
  verified: boolean;
}

async function chainRun(postgres: PostgresServer, build: Build, writers: number, inflight: number): Promise<ChainRun> {
  const url = await postgres.createDatabase(`bench_chain_${build.name}_${writers}_${inflight}`);
  const stores: Store[] = [];
  for (let i = 0; i < writers; i += 1) stores.push(await build.openStore(url, Date.now));
  try {
    let appended = 0;
    let n = 0;
    const before = { ...sent };
    const deadline = performance.now() + SECONDS * 1000;
    const started = performance.now();
    const loop = async (store: Store) => {
      while (performance.now() < deadline) {
        const records = await store.append(issuanceEvents((n += 1)));
        appended += records.length; // not `appended += await ...`, which reads appended before waiting
      }
    };
    await Promise.all(stores.flatMap((store) => Array.from({ length: inflight }, () => loop(store))));
    const seconds = (performance.now() - started) / 1000;
    const verdict = await verifyStoredChain((stores[0] as Store).events);
    const head = await (stores[0] as Store).events.head();
    return {
      build: build.name,
      writers,
      inflight,
      eventsPerSecond: appended / seconds,
      eventsPerTransaction: appended / Math.max(1, sent.transactions - before.transactions),
      verified: verdict.ok && verdict.events === head?.seq && head.seq === appended,
    };
  } finally {
    for (const store of stores) await store.close();
  }
}

// --- 2. Round trips per issuance ---------------------------------------------------------------

interface RoundTrips {
  build: Build['name'];
  concurrency: number;
  issuances: number;
  perIssuance: number;
  transactions: number;
  perTransaction: number;
  issuancesPerTransaction: number;
}

async function roundTrips(postgres: PostgresServer, build: Build): Promise<RoundTrips[]> {
  const dir = mkdtempSync(join(tmpdir(), 'jit-bench-chain-'));
  const issuers = await createTestIssuers();
  const database = await postgres.createDatabase(`bench_round_trips_${build.name}`);
  const config = build.parseConfig('bench', {
    ...baseConfig(dir, issuers, database),
    // Sweeps and key checks would add their own statements to the count: far apart here.
    scheduler: { interval: '60m' },
    limits: { requestsPerMinute: 100_000_000, liveGrants: 100_000_000, pendingRequests: 1_000 },
  });
  // baseConfig gives PostgreSQL a key-encryption key file (test/helpers/broker.ts).
  const broker = await build.createBroker({ config, logger: createLogger({ level: 'silent' }), env: {} });
  const server = createServer(broker.app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  try {
    const tokens = await Promise.all(
      Array.from({ length: IDENTITIES }, (_, i) => issuers.ci.token(`repo:acme/app:ref:refs/heads/job-${i}`, { repository: 'acme/app', actor: `octocat-${i}`, exp: Math.floor(Date.now() / 1000) + 3600 })),
    );
    let turn = 0;
    const issue = async () => {
      const response = await fetch(`${base}/v1/credentials`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tokens[(turn += 1) % IDENTITIES]}`, 'content-type': 'application/json' },
        body: JSON.stringify({ task_id: 'bench', scopes: ['artifacts:read'], audience: 'registry.acme.internal' }),
      });
      if (response.status !== 201) throw new Error(`issuance answered ${response.status}: ${await response.text()}`);
    };
    // Warm: the identities' first requests, connections, the keyring.
    await Promise.all(Array.from({ length: IDENTITIES }, issue));
    const results: RoundTrips[] = [];
    for (const concurrency of [1, 48]) {
      const before = { ...sent };
      let left = ISSUANCES;
      await Promise.all(Array.from({ length: concurrency }, async () => {
        while (left > 0) {
          left -= 1;
          await issue();
        }
      }));
      const queries = sent.queries - before.queries;
      const transactions = sent.transactions - before.transactions;
      results.push({
        build: build.name,
        concurrency,
        issuances: ISSUANCES,
        perIssuance: queries / ISSUANCES,
        transactions,
        perTransaction: queries / transactions,
        issuancesPerTransaction: ISSUANCES / transactions,
      });
    }
    return results;
  } finally {
    await new Promise((resolve) => server.close(resolve));
    await broker.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

// --- Main ----------------------------------------------------------------------------------------

const postgres = await startPostgres();
try {
  const chains: ChainRun[] = [];
  for (const inflight of INFLIGHT) {
    for (const writers of WRITERS) {
      for (const build of BUILDS) {
        say(`chain (${build.name}): ${writers} writer(s), ${inflight} append(s) in flight each, ${SECONDS} s`);
        chains.push(await chainRun(postgres, build, writers, inflight));
      }
    }
  }
  const trips: RoundTrips[] = [];
  for (const build of BUILDS) {
    say(`round trips (${build.name}): ${ISSUANCES} issuances one at a time, then 48 at a time`);
    trips.push(...(await roundTrips(postgres, build)));
  }
  const named = BUILDS.length > 1;

  out(`\nnode ${process.version}, ${process.platform}/${process.arch}; PostgreSQL with fsync on, on the same machine\n`);
  out('The audit chain alone (`store.append` of an issuance\'s two events, from replicas\' stores at once):\n');
  out(`| ${named ? 'build | ' : ''}writers | appends in flight each | events per second | events per transaction | chain verified |`);
  out(`| ${named ? '--- | ' : ''}--- | --- | --- | --- | --- |`);
  for (const c of chains) {
    out(`| ${named ? `${c.build} | ` : ''}${c.writers} | ${c.inflight} | ${c.eventsPerSecond.toFixed(0)} | ${c.eventsPerTransaction.toFixed(1)} | ${c.verified ? 'yes' : 'NO'} |`);
  }
  out('\nRound trips to PostgreSQL per issuance (`POST /v1/credentials`, 64 identities in turn, a broker in this process):\n');
  out(`| ${named ? 'build | ' : ''}issuances at once | issuances | round trips per issuance | transactions | round trips per transaction | issuances per transaction |`);
  out(`| ${named ? '--- | ' : ''}--- | --- | --- | --- | --- | --- |`);
  for (const t of trips) {
    out(
      `| ${named ? `${t.build} | ` : ''}${t.concurrency} | ${t.issuances} | ${t.perIssuance.toFixed(2)} | ${t.transactions} | ${t.perTransaction.toFixed(1)} | ${t.issuancesPerTransaction.toFixed(1)} |`,
    );
  }
  const log = postgres.logSince(0);
  out(`\nPostgreSQL's log: ${log.deadlocks} \`deadlock detected\`, ${log.errors} ERROR lines${log.firstError ? ` (first: ${log.firstError})` : ''}`);
  if (chains.some((c) => !c.verified)) process.exitCode = 1;
} finally {
  await postgres.stop();
}
