/**
 * Loads the built broker over real HTTP, as its own process, side by side with a peer doing
 * comparable work (panva's oidc-provider minting client_credentials JWT access tokens, also its
 * own process), and reports what each costs: req/s, p50/p99 latency, CPU time per request and
 * peak RSS, and the broker/peer throughput ratio. The machine is shared and noisy, so the ratio
 * measured in one run is the figure to compare, not the absolute times.
 *
 *   npm run bench:http                        # 10 s per target, 50 connections, 2 s warm-up: the peer,
 *                                             #   the broker as `npm start` runs it (both endpoints, and
 *                                             #   with DPoP proofs), and with one worker; then all of them
 *                                             #   again in turns of a second, for ratios at the same moments
 *   npm run bench:http -- --duration 3        # a quick look
 *   npm run bench:http -- --long              # also 30 s of /oauth2/token: late vs early throughput
 *   npm run bench:http -- --profile           # also one worker under --cpu-prof: where its time goes
 *   npm run -s bench:http -- --json > r.json  # the results as JSON on stdout (progress stays on stderr;
 *                                             #   -s keeps npm's own banner off stdout)
 *
 * More options: --connections N, --warmup S, --long-duration S, --top N,
 * --profile-dir DIR (keep the .cpuprofile files, to open in Chrome DevTools), --workers N (the
 * broker's `listen.workers` instead of the default start's `auto`).
 *
 * PostgreSQL (--postgres): --replicas 1,3 (the replica counts to run, one after another, each on a
 * fresh database), --identities N (N pipeline jobs of N people, taken in turn by the requests of
 * every connection and replica, instead of one job for every request), --postgres-only (skips the
 * peer and the SQLite runs, for a quick look; compare ratios within one full run). The server's own
 * log is kept and searched: a `deadlock detected` in it is reported with the run's figures. A run
 * of N replicas warms up N times --warmup, so that each process has seen as many requests as one
 * broker's warm-up gives it before it is measured. With two replica counts or more, each count
 * then runs again on a database of its own, all side by side and loaded in turns of a second:
 * whether more replicas issue more is judged on that, at the same moments of the machine.
 *
 * A before and after in one run (--baseline DIR: another checkout with its own dist/, an older
 * release or this one before a change, started as its own package.json's `start` says, flags
 * included): on SQLite, the baseline's default start and one worker join the in-turns phase
 * beside this build's, each on a database of its own, so that both builds meet the same moments
 * of a shared machine's load; on PostgreSQL, every run runs twice, first with the baseline, on
 * the same server. A change worth less than the machine's noise between runs minutes apart
 * (often 10% or more) still shows here. Judge the targets on a run without it: the baseline's
 * brokers idle beside the measured ones.
 *
 *   npm run bench:http -- --baseline ../jit-broker-before
 *   npm run bench:http -- --postgres --identities 64 --connections 48
 *   npm run bench:http -- --postgres --identities 64 --connections 48 --baseline ../jit-broker-1.4
 *
 * Runs dist/main.js (building it first when missing or older than src/), each broker run on a
 * fresh temporary database, so no run inherits another's grants. Exits 1 when most responses
 * of a run failed; targets not met are reported, not fatal. Nothing here runs in `npm test`.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import YAML from 'yaml';
import { BenchError, say, UsageError } from './bench-http/console.js';
import { measure, measureGroupsInTurns, measureInTurns, percentile, preflight, type LoadPlan, type Measurement, type Served, type Target } from './bench-http/load.js';
import { dpopProofs } from './bench-http/dpop.js';
import { startPostgres, type PostgresServer, type ServerLog } from './bench-http/postgres.js';
import { brokerArgs, brokerArgsIn, type Child, failOnExit, freePort, startChild, stopAll, stopChild, waitUntilReady } from './bench-http/processes.js';
import { hottestFunctions, readProfile, timeByArea, type HotFunction, type ProfileArea } from './bench-http/profile.js';
import { dpopChecks, earlyAndLate, LONG_WINDOW_S, printMarkdown, replicaChecks, TARGETS, targetChecks, warnAboutFailures, type LongRun, type Report } from './bench-http/report.js';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
const BROKER_MAIN = join(ROOT, 'dist', 'main.js');
const PEER_MAIN = join(ROOT, 'scripts', 'peer', 'oidc-provider.mjs');

/** Both servers sign with this, so each request costs each of them one signature of one kind. */
const SIGNING_ALG = 'ES256';
const GITHUB_ISS = 'https://token.actions.githubusercontent.com';
const SUBJECT = 'repo:acme/app:ref:refs/heads/main';
const SCOPE = 'artifacts:read';
const AUDIENCE = 'registry.acme.internal';
const TASK_ID = 'bench-http';
/** The broker's public URL in every run (one issuer for every replica: their tokens are one broker's); DPoP proofs name it. */
const BROKER_ISSUER = 'http://127.0.0.1:8080';

// --- Options -----------------------------------------------------------------------------------

interface Options {
  duration: number;
  warmup: number;
  connections: number;
  long: boolean;
  longDuration: number;
  profile: boolean;
  profileDir: string | undefined;
  top: number;
  json: boolean;
  /** The broker's `listen.workers` (processes sharing the port): `auto` is the default start's. */
  workers: number | 'auto';
  /** Also run the broker on PostgreSQL: one replica, then three on one database. */
  postgres: boolean;
  /** Only the PostgreSQL runs: no peer, no SQLite broker. */
  postgresOnly: boolean;
  /** The numbers of replicas to run on PostgreSQL, in order. */
  replicas: number[];
  /** Distinct pipeline identities (each its own person) that the requests take in turn. */
  identities: number;
  /** Another checkout whose built broker runs each PostgreSQL run first, for comparison. */
  baseline: string | undefined;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      duration: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '2' },
      connections: { type: 'string', default: '50' },
      long: { type: 'boolean', default: false },
      'long-duration': { type: 'string', default: '30' },
      profile: { type: 'boolean', default: false },
      'profile-dir': { type: 'string' },
      top: { type: 'string', default: '20' },
      json: { type: 'boolean', default: false },
      workers: { type: 'string', default: 'auto' },
      postgres: { type: 'boolean', default: false },
      'postgres-only': { type: 'boolean', default: false },
      replicas: { type: 'string', default: '1,3' },
      identities: { type: 'string', default: '1' },
      baseline: { type: 'string' },
    },
  });
  const positive = (name: string, text: string, min = 1) => {
    const value = Number(text);
    if (!Number.isInteger(value) || value < min) throw new UsageError(`--${name} must be a whole number of at least ${min}, not "${text}"`);
    return value;
  };
  return {
    duration: positive('duration', values.duration),
    warmup: positive('warmup', values.warmup, 0),
    connections: positive('connections', values.connections),
    long: values.long,
    // Two disjoint windows of LONG_WINDOW_S, or early and late would share samples.
    longDuration: positive('long-duration', values['long-duration'], 2 * LONG_WINDOW_S),
    profile: values.profile || values['profile-dir'] !== undefined,
    profileDir: values['profile-dir'] === undefined ? undefined : resolve(values['profile-dir']),
    top: positive('top', values.top),
    json: values.json,
    workers: values.workers === 'auto' ? 'auto' : positive('workers', values.workers),
    postgres: values.postgres || values['postgres-only'],
    postgresOnly: values['postgres-only'],
    replicas: values.replicas.split(',').map((n) => positive('replicas', n.trim())),
    identities: positive('identities', values.identities),
    baseline: values.baseline === undefined ? undefined : resolve(values.baseline),
  };
}

// --- The broker under test: build, identity, configuration --------------------------------------

/** The newest modification time of any file under `dir`. */
function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) newest = Math.max(newest, statSync(join(entry.parentPath, entry.name)).mtimeMs);
  }
  return newest;
}

/** The bench runs what would be deployed, dist/; a stale build would measure old code. */
function ensureBuilt(): void {
  const reason = !existsSync(BROKER_MAIN)
    ? 'dist/main.js is missing'
    : statSync(BROKER_MAIN).mtimeMs < newestMtime(join(ROOT, 'src'))
      ? 'dist/main.js is older than src/'
      : undefined;
  if (!reason) return;
  say(`${reason}: running npm run build first`);
  // stdout to stderr as well: `--json` output must stay parseable.
  execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: ['ignore', 2, 2] });
}

interface Identity {
  /** The public JWKS of the issuer, for the broker's configuration. */
  jwks: { keys: JWK[] };
  /** One identity token per pipeline job; every request of a run uses one of them. */
  tokens: string[];
}

/**
 * GitHub Actions OIDC tokens as GitHub sends them (RS256, its claim set with string ids), from a
 * key made here. With one (the default), every request is the same pipeline job, which is what
 * makes a per-identity cost that grows with history show up. With several, each is another
 * branch's job started by another person: separate holders, as many jobs of an organisation are.
 */
async function createGitHubIdentities(count: number): Promise<Identity> {
  const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true });
  const kid = 'bench-github-actions';
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' };
  const now = Math.floor(Date.now() / 1000);
  const token = (i: number) => {
    const ref = count === 1 ? 'refs/heads/main' : `refs/heads/job-${i}`;
    return new SignJWT({
      repository: 'acme/app',
      repository_id: '123456789',
      repository_owner: 'acme',
      repository_owner_id: '987654',
      repository_visibility: 'private',
      ref,
      ref_type: 'branch',
      sha: 'a94a8fe5ccb19ba61c4c0873d391e987982fbbd3',
      actor: count === 1 ? 'octocat' : `octocat-${i}`,
      actor_id: String(583231 + i),
      workflow: 'build',
      workflow_ref: `acme/app/.github/workflows/build.yml@${ref}`,
      job_workflow_ref: `acme/app/.github/workflows/build.yml@${ref}`,
      run_id: String(9876543210 + i),
      run_number: '42',
      run_attempt: '1',
      event_name: 'push',
      runner_environment: 'github-hosted',
    })
      .setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' })
      .setIssuer(GITHUB_ISS)
      .setSubject(count === 1 ? SUBJECT : `repo:acme/app:ref:${ref}`)
      .setAudience('jit-broker')
      .setIssuedAt(now)
      .setNotBefore(now)
      .setExpirationTime(now + 3600)
      .setJti(randomUUID())
      .sign(privateKey);
  };
  return { jwks: { keys: [jwk] }, tokens: await Promise.all(Array.from({ length: count }, (_, i) => token(i))) };
}

/**
 * THE bench configuration of the broker, in one place. A GitHub-shaped workload issuer, a
 * low-risk scope granted to the pipeline, and a separation rule on two other scopes (so the
 * separation check runs on every request, as it would in production).
 * Limits are set far above what one run can reach, so the bench measures the broker's work
 * (the limits are still counted on every request) rather than its refusals: each run uses one
 * identity at thousands of requests a minute.
 */
function benchBrokerConfig({ port, dir, jwks, workers, database }: BrokerSetup & { port: number; dir: string; jwks: Identity['jwks'] }): Record<string, unknown> {
  return {
    issuer: BROKER_ISSUER,
    // `auto` is left out, as a configuration written for `npm start` leaves it.
    listen: { host: '127.0.0.1', port, ...(workers === 'auto' ? {} : { workers }) },
    database: database ?? join(dir, 'broker.db'),
    clockSkew: '30s',
    scheduler: { interval: '10s' },
    // On PostgreSQL the replicas share the cluster's key, sealed in the database under the run's
    // key-encryption key (given in the environment); on SQLite, key files.
    signing: { algorithm: SIGNING_ALG, keyDir: join(dir, 'keys'), rotateEvery: '24h', publishAhead: '2s' },
    identity: {
      issuers: [
        {
          name: 'github',
          kind: 'workload',
          issuer: GITHUB_ISS,
          jwks,
          audiences: ['jit-broker'],
          algorithms: ['RS256'],
          requiredClaims: ['repository'],
          initiatorClaim: 'actor',
        },
      ],
    },
    scopes: [
      { name: SCOPE, risk: 'low', maxTtl: '15m' },
      { name: 'model:train', risk: 'low', maxTtl: '30m' },
      { name: 'model:deploy', risk: 'high', maxTtl: '10m', approvals: 1 },
    ],
    policies: [{ id: 'acme-app', match: { issuer: 'github', subject: 'repo:acme/app:*' }, scopes: [SCOPE] }],
    separation: [{ name: 'train-vs-deploy', scopes: ['model:train', 'model:deploy'] }],
    limits: { requestsPerMinute: 100_000_000, liveGrants: 100_000_000, pendingRequests: 1_000 },
  };
}

// --- The servers -------------------------------------------------------------------------------

interface BrokerProcess {
  child: Child;
  base: string;
  /** Where --cpu-prof writes this broker's profile, when profiling. */
  profileDir: string | undefined;
}

/** How a broker of a run is set up: its processes, its database when not a SQLite file of its own, and which build. */
interface BrokerSetup {
  workers: number | 'auto';
  database?: string | undefined;
  /** The checkout whose dist/ runs; this one's by default. */
  root?: string | undefined;
}

/** The key-encryption key of this run's PostgreSQL replicas: made here, gone with the run. */
const RUN_KEY_ENCRYPTION_KEY = randomBytes(32).toString('base64');

/** A broker of its own on a fresh directory (database, keys, config), started from dist/ as it is deployed. */
async function startBroker(label: string, workDir: string, identity: Identity, profileRoot: string | undefined, setup: BrokerSetup): Promise<BrokerProcess> {
  const dir = join(workDir, label);
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const configFile = join(dir, 'broker.yaml');
  writeFileSync(configFile, YAML.stringify(benchBrokerConfig({ port, dir, jwks: identity.jwks, ...setup })));

  const profileDir = profileRoot === undefined ? undefined : join(profileRoot, label);
  const nodeFlags = profileDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', profileDir];
  // Env overrides of the config (PORT, HOST, BROKER_DB, BROKER_CONFIG) would point it elsewhere.
  const { PORT: _p, HOST: _h, BROKER_DB: _d, BROKER_CONFIG: _c, BROKER_KEY_ENCRYPTION_KEY: _k, ...env } = process.env;
  // PostgreSQL refuses to start without a key-encryption key; every replica of the run gets the same one.
  const kek = setup.database === undefined ? {} : { BROKER_KEY_ENCRYPTION_KEY: RUN_KEY_ENCRYPTION_KEY };
  const args = setup.root === undefined ? brokerArgs('--config', configFile) : brokerArgsIn(setup.root, '--config', configFile);
  const child = startChild(`broker (${label})`, [...nodeFlags, ...args], { ...env, ...kek, LOG_LEVEL: 'warn' });
  const base = `http://127.0.0.1:${port}`;
  await Promise.race([waitUntilReady(`${base}/readyz`), failOnExit(child)]);
  return { child, base, profileDir };
}

interface PeerReady {
  token_endpoint: string;
  client_id: string;
  client_secret: string;
  resource: string;
  scope: string;
}

/** The peer prints one JSON line once it listens: its token endpoint and client. */
async function startPeer(): Promise<{ child: Child; ready: PeerReady }> {
  const child = startChild('peer (oidc-provider)', [PEER_MAIN, '--alg', SIGNING_ALG], process.env, { ipc: true });
  const ready = JSON.parse(await Promise.race([child.firstLine, failOnExit(child)])) as PeerReady;
  return { child, ready };
}

// --- What is loaded ------------------------------------------------------------------------------

/** The identities in turn, one per request, shared by every target of a run (replicas included). */
function takeTurns(identity: Identity): () => string {
  let next = 0;
  return () => identity.tokens[(next += 1) % identity.tokens.length] as string;
}

function tokenExchangeTarget(base: string, identity: Identity, turn = takeTurns(identity)): Target {
  const request = (token: string) => ({
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: token,
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      scope: SCOPE,
      audience: AUDIENCE,
      task_id: TASK_ID,
    }).toString(),
  });
  return {
    name: 'broker POST /oauth2/token',
    url: `${base}/oauth2/token`,
    method: 'POST',
    ...request(identity.tokens[0] as string),
    ...(identity.tokens.length > 1 ? { vary: () => request(turn()) } : {}),
  };
}

/** Token exchange with a fresh DPoP proof on every request: each token comes back bound to the client's key. */
function dpopExchangeTarget(base: string, identity: Identity): Target {
  const exchange = tokenExchangeTarget(base, identity);
  const proofs = dpopProofs(`${BROKER_ISSUER}/oauth2/token`);
  const withProof = ({ headers, body }: { headers: Record<string, string>; body: string }) => ({ headers: { ...headers, dpop: proofs.next() }, body });
  return {
    ...exchange,
    ...withProof(exchange),
    name: 'broker POST /oauth2/token with DPoP',
    vary: () => withProof(exchange.vary?.() ?? exchange),
    prepare: (seconds) => proofs.prepare(seconds),
  };
}

function credentialsTarget(base: string, identity: Identity, turn = takeTurns(identity)): Target {
  const request = (token: string) => ({
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ task_id: TASK_ID, scopes: [SCOPE], audience: AUDIENCE }),
  });
  return {
    name: 'broker POST /v1/credentials',
    url: `${base}/v1/credentials`,
    method: 'POST',
    ...request(identity.tokens[0] as string),
    ...(identity.tokens.length > 1 ? { vary: () => request(turn()) } : {}),
  };
}

function peerTarget(ready: PeerReady): Target {
  const basic = Buffer.from(`${encodeURIComponent(ready.client_id)}:${encodeURIComponent(ready.client_secret)}`).toString('base64');
  return {
    name: 'peer oidc-provider POST /token',
    url: ready.token_endpoint,
    method: 'POST',
    headers: { authorization: `Basic ${basic}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope: ready.scope, resource: ready.resource }).toString(),
  };
}

// --- Runs ----------------------------------------------------------------------------------------

interface BrokerRun {
  measurement: Measurement;
  profile?: { hottest: HotFunction[]; areas: ProfileArea[] };
}

interface RunContext {
  workDir: string;
  identity: Identity;
  profileRoot: string | undefined;
  options: Options;
}

const planFor = (options: Options, seconds: number): LoadPlan => ({ connections: options.connections, warmupSeconds: options.warmup, seconds });

/** How a SQLite broker of a run is started: its workers, and its name in the report. */
interface Start {
  workers: number | 'auto';
  name: string;
}

/** One broker endpoint on a broker of its own: start, check, load, stop, read its profile (when `profiled`). */
async function runBroker(
  label: string,
  start: Start,
  makeTarget: (base: string, identity: Identity) => Target,
  seconds: number,
  { workDir, identity, profileRoot, options }: RunContext,
  { profiled = false } = {},
): Promise<BrokerRun> {
  const broker = await startBroker(label, workDir, identity, profiled ? profileRoot : undefined, { workers: start.workers });
  let measurement: Measurement;
  try {
    const endpoint = makeTarget(broker.base, identity);
    const target = { ...endpoint, name: endpoint.name.replace(/^broker /, `broker, ${start.name}, `) };
    await preflight(target);
    measurement = await measure(target, broker.child, planFor(options, seconds));
  } finally {
    await stopChild(broker.child); // --cpu-prof writes the profile as it exits
  }
  if (broker.profileDir === undefined) return { measurement };
  const profile = readProfile(broker.profileDir);
  return { measurement, profile: { hottest: hottestFunctions(profile, options.top, ROOT), areas: timeByArea(profile, ROOT) } };
}

/** Several endpoints on one broker, loaded in turns (see measureInTurns): what one costs against another. */
async function runInTurns(
  label: string,
  start: Start,
  makeTargets: (base: string, identity: Identity) => Target[],
  seconds: number,
  { workDir, identity, options }: RunContext,
): Promise<Measurement[]> {
  const broker = await startBroker(label, workDir, identity, undefined, { workers: start.workers });
  try {
    const targets = makeTargets(broker.base, identity).map((endpoint) => ({ ...endpoint, name: `${endpoint.name.replace(/^broker /, `broker, ${start.name}, `)}, in turns` }));
    for (const target of targets) await preflight(target);
    return await measureInTurns(targets.map((target) => ({ target, server: broker.child })), planFor(options, seconds));
  } finally {
    await stopChild(broker.child);
  }
}

async function runPeer(options: Options): Promise<Measurement> {
  const peer = await startPeer();
  try {
    const target = peerTarget(peer.ready);
    await preflight(target);
    return await measure(target, peer.child, planFor(options, options.duration));
  } finally {
    await stopChild(peer.child);
  }
}

/** The endpoints measured against the peer in turns, each named as its run of its own is. */
type Versus = 'exchange' | 'credentials' | 'oneWorker';

interface VersusPeer {
  peer: Measurement;
  brokers: Map<Versus, Measurement>;
  /** With --baseline: the same endpoints on the baseline build, in the same turns. */
  baseline: Map<Versus, Measurement>;
}

/**
 * The peer and the broker's runs side by side, each loaded in turn for a second (see
 * measureInTurns): throughput against the peer's at the same moments of a machine whose load moves
 * from one minute to the next, which runs minutes apart cannot give. The servers idle while
 * another is loaded; each broker start on a database of its own, as in its own run.
 */
async function runVersusPeer(start: Start, oneProcess: boolean, context: RunContext): Promise<VersusPeer> {
  const { identity, options } = context;
  const inTurns = (target: Target, name: string) => ({ ...target, name: `${name}, in turns with the peer` });
  const peer = await startPeer();
  const served: (Served & { versus?: Versus; build?: Build['name'] })[] = [
    { target: { ...peerTarget(peer.ready), name: 'peer oidc-provider POST /token, in turns with the broker' }, server: peer.child },
  ];
  const children = [peer.child];
  try {
    const starts: [Start, string][] = [[start, 'versus-default'], ...(oneProcess ? [] : [[ONE_WORKER, 'versus-one-worker'] as [Start, string]])];
    const builds: Build[] = [{ name: 'this' }, ...(options.baseline ? [{ name: 'baseline' as const, root: options.baseline }] : [])];
    for (const build of builds) {
      for (const [which, label] of starts) {
        const broker = await startBroker(`${label}-${build.name}`, context.workDir, identity, undefined, { workers: which.workers, root: build.root });
        children.push(broker.child);
        const whose = build.root ? 'broker (baseline), ' : 'broker, ';
        const named = (endpoint: Target) => inTurns(endpoint, endpoint.name.replace(/^broker /, `${whose}${which.name}, `));
        const add = (target: Target, versus: Versus) => served.push({ target: named(target), server: broker.child, versus, build: build.name });
        if (which === start) {
          add(tokenExchangeTarget(broker.base, identity), 'exchange');
          add(credentialsTarget(broker.base, identity), 'credentials');
        } else {
          add(tokenExchangeTarget(broker.base, identity), 'oneWorker');
        }
      }
    }
    for (const { target } of served) await preflight(target);
    const [peerRun, ...brokerRuns] = await measureInTurns(served, planFor(options, options.duration));
    const brokers = new Map<Versus, Measurement>();
    const baseline = new Map<Versus, Measurement>();
    served.slice(1).forEach(({ versus, build }, i) => versus && (build === 'baseline' ? baseline : brokers).set(versus, brokerRuns[i] as Measurement));
    return { peer: peerRun as Measurement, brokers, baseline };
  } finally {
    for (const child of children) await stopChild(child);
  }
}

/**
 * `replicas` brokers on one PostgreSQL database, each its own process signing with the cluster's key, loaded
 * at once (the connections split between them), measured as one broker: their throughput summed,
 * their worst p99, their CPU and memory added up; how fast their one audit chain grew; and what
 * PostgreSQL's own log says about the run (deadlocks, errors).
 */
async function runReplicas(replicas: number, build: Build, postgres: PostgresServer, { workDir, identity, profileRoot, options }: RunContext): Promise<ReplicaRun> {
  const database = await postgres.createDatabase(`bench_replicas_${replicas}_${build.name}`);
  const brokers: BrokerProcess[] = [];
  try {
    // The first creates the schema and the first key; the others start on it.
    for (let i = 0; i < replicas; i += 1) {
      // Profiled, the first replica stands for the others.
      const profiled = i === 0 ? profileRoot : undefined;
      brokers.push(await startBroker(`pg-${build.name}-${replicas}-${i}`, workDir, identity, profiled, { workers: 1, database, root: build.root }));
    }
    // One turn for all: requests in flight at once, on any replica, are different jobs.
    const turn = takeTurns(identity);
    const targets = brokers.map((broker) => tokenExchangeTarget(broker.base, identity, turn));
    for (const target of targets) await preflight(target);
    const connections = (i: number) => Math.floor(options.connections / replicas) + (i < options.connections % replicas ? 1 : 0);
    const plan = (i: number, seconds: number, warmupSeconds = 0) => ({ connections: connections(i), warmupSeconds, seconds });
    // Each replica takes a share of the requests: warmed up `replicas` times as long, each process
    // has seen as many requests as a single broker's warm-up gives it (V8 optimises by use).
    const warmup = options.warmup * replicas;
    if (warmup > 0) await Promise.all(brokers.map((broker, i) => measure(targets[i] as Target, broker.child, plan(i, warmup))));
    const before = await postgres.chainLength(database);
    const log = postgres.logMark();
    const cpuBefore = postgres.cpuSeconds();
    const runs = await Promise.all(brokers.map((broker, i) => measure(targets[i] as Target, broker.child, plan(i, options.duration))));
    const cpuAfter = postgres.cpuSeconds();
    const appended = (await postgres.chainLength(database)) - before;
    const seconds = Math.max(...runs.map((run) => run.seconds));
    const label = `broker${build.root === undefined ? '' : ` (${build.name})`} on PostgreSQL, ${replicas} replica${replicas > 1 ? 's' : ''}${options.identities > 1 ? `, ${options.identities} identities` : ''}, POST /oauth2/token`;
    const server = postgres.logSince(log);
    if (server.errors > 0) say(`  PostgreSQL logged ${server.errors} ERROR lines (${server.deadlocks} deadlocks) during the run; the first: ${server.firstError}`);
    const measurement = combine(label, runs);
    const postgresCpuMs = cpuBefore === undefined || cpuAfter === undefined ? undefined : ((cpuAfter - cpuBefore) * 1000) / measurement.requests;
    for (const broker of brokers) await stopChild(broker.child); // --cpu-prof writes the profile as it exits
    const profileDir = brokers[0]?.profileDir;
    return {
      measurement,
      build: build.name,
      eventsPerSecond: appended / seconds,
      server,
      ...(postgresCpuMs === undefined ? {} : { postgresCpuMs }),
      ...(profileDir === undefined ? {} : { profile: hottestFunctions(readProfile(profileDir), options.top, build.root ?? ROOT) }),
    };
  } finally {
    for (const broker of brokers) await stopChild(broker.child);
  }
}

/** Several replicas' measurements as one broker's: throughput, CPU and memory summed; latency over all their responses (and the worst replica's p99). */
/**
 * Each number of replicas on a database of its own, all running at once and loaded in turns of a
 * second (see measureGroupsInTurns): whether more replicas issue more, at the same moments of a
 * machine whose load moves between runs minutes apart. Each measured as one broker, as in runReplicas.
 */
async function runReplicasInTurns(counts: readonly number[], postgres: PostgresServer, { workDir, identity, options }: RunContext): Promise<Measurement[]> {
  const children: Child[] = [];
  try {
    const groups: Served[][] = [];
    for (const count of counts) {
      const database = await postgres.createDatabase(`bench_turns_${count}`);
      const turn = takeTurns(identity);
      const group: Served[] = [];
      for (let i = 0; i < count; i += 1) {
        const broker = await startBroker(`pg-turns-${count}-${i}`, workDir, identity, undefined, { workers: 1, database });
        children.push(broker.child);
        group.push({ target: tokenExchangeTarget(broker.base, identity, turn), server: broker.child });
      }
      for (const { target } of group) await preflight(target);
      groups.push(group);
    }
    const measured = await measureGroupsInTurns(groups, planFor(options, options.duration));
    const identities = options.identities > 1 ? `, ${options.identities} identities` : '';
    return measured.map((parts, i) => combine(`broker on PostgreSQL, ${counts[i]} replica${counts[i] === 1 ? '' : 's'}${identities}, POST /oauth2/token, in turns`, parts));
  } finally {
    for (const child of children) await stopChild(child);
  }
}

function combine(target: string, runs: Measurement[]): Measurement {
  const sum = (pick: (run: Measurement) => number) => runs.reduce((total, run) => total + pick(run), 0);
  const requests = sum((run) => run.requests);
  return {
    target,
    seconds: Math.max(...runs.map((run) => run.seconds)),
    requests,
    ok: sum((run) => run.ok),
    non2xx: sum((run) => run.non2xx),
    errors: sum((run) => run.errors),
    timeouts: sum((run) => run.timeouts),
    statusCodes: Object.assign({}, ...runs.map((run) => run.statusCodes)),
    reqPerSec: sum((run) => run.reqPerSec),
    // Over every response of every replica, as the callers behind a load balancer see them.
    p50Ms: percentile(runs.flatMap((run) => run.okLatenciesMs), 50),
    p99Ms: percentile(runs.flatMap((run) => run.okLatenciesMs), 99),
    worstP99Ms: Math.max(...runs.map((run) => run.p99Ms)),
    cpuMsPerRequest: sum((run) => run.cpuMsPerRequest * run.requests) / requests,
    loadCpuMsPerRequest: sum((run) => run.loadCpuMsPerRequest * run.requests) / requests,
    peakRssMB: sum((run) => run.peakRssMB),
    largestProcessRssMB: Math.max(...runs.map((run) => run.largestProcessRssMB)),
    processes: sum((run) => run.processes),
    okPerSecond: (runs[0]?.okPerSecond ?? []).map((_, i) => sum((run) => run.okPerSecond[i] ?? 0)),
    okLatenciesMs: runs.flatMap((run) => run.okLatenciesMs),
    logLines: sum((run) => run.logLines),
    ...(runs.find((run) => run.failureSample) ? { failureSample: runs.find((run) => run.failureSample)?.failureSample } : {}),
  };
}

// --- Main ----------------------------------------------------------------------------------------

/** A build of the broker: this checkout's, or the baseline's. */
interface Build {
  name: 'this' | 'baseline';
  root?: string | undefined;
}

interface ReplicaRun {
  measurement: Measurement;
  /** Which build ran. */
  build: Build['name'];
  /** Audit events appended per second by all the replicas together, into their one chain. */
  eventsPerSecond: number;
  /** What PostgreSQL logged during the measured run. */
  server: ServerLog;
  /** CPU time of PostgreSQL's processes per request (the brokers' is in the measurement). */
  postgresCpuMs?: number;
  /** With --profile: the first replica's hottest functions. */
  profile?: HotFunction[];
}

interface Runs {
  peer?: Measurement;
  /** The broker as started by default (or with --workers), on each endpoint. */
  exchange?: BrokerRun;
  credentials?: BrokerRun;
  /** Token exchange without and with a DPoP proof, in turns on one broker of the same start: what binding a token costs. */
  dpop?: { plain: Measurement; bound: Measurement };
  /** The broker in one process, when the default start runs more. */
  oneWorker?: BrokerRun;
  /** The peer and the runs above in turns, at the same moments: the ratios the targets are judged on. */
  versusPeer?: VersusPeer;
  long?: { run: BrokerRun; trend: LongRun };
  /** With --profile: one worker under --cpu-prof, in a run of its own (its figures are the profiler's too). */
  profiled?: BrokerRun;
  replicas?: ReplicaRun[];
  /** Each number of replicas again, all running side by side and loaded in turns: the comparison the targets are judged on. */
  replicasInTurns?: Measurement[];
}

/** The start measured first: `npm start`'s (workers: auto, one per core) unless --workers says otherwise. */
function startOf(options: Options): Start {
  if (options.workers !== 'auto') return { workers: options.workers, name: options.workers === 1 ? 'one worker' : `${options.workers} workers` };
  return { workers: 'auto', name: `default start (${availableParallelism()} workers)` };
}

const ONE_WORKER: Start = { workers: 1, name: 'one worker' };

/**
 * One peer, then each broker endpoint on a fresh broker, then all of them in turns, then (with
 * --long) the long run. The phases run one after another, and only the servers compared in turns
 * run at once, idle but for their turns: two servers under load would share the two cores.
 */
async function runAll(context: RunContext): Promise<Runs> {
  const { options } = context;
  const runs: Runs = {};
  const start = startOf(options);
  const oneProcess = start.workers === 1 || (start.workers === 'auto' && availableParallelism() === 1);
  if (!options.postgresOnly) {
    say('peer: oidc-provider, client_credentials, JWT access tokens');
    runs.peer = await runPeer(options);
    say(`broker, ${start.name}: token exchange`);
    runs.exchange = await runBroker('oauth2-token', start, tokenExchangeTarget, options.duration, context);
    say(`broker, ${start.name}: token exchange with and without DPoP proofs, in turns`);
    const [plain, bound] = await runInTurns('oauth2-token-dpop', start, (base, identity) => [tokenExchangeTarget(base, identity), dpopExchangeTarget(base, identity)], options.duration, context);
    runs.dpop = { plain: plain as Measurement, bound: bound as Measurement };
    say(`broker, ${start.name}: credentials API`);
    runs.credentials = await runBroker('v1-credentials', start, credentialsTarget, options.duration, context);
    if (!oneProcess) {
      say('broker, one worker: token exchange');
      runs.oneWorker = await runBroker('one-worker-oauth2-token', ONE_WORKER, tokenExchangeTarget, options.duration, context);
    }
    say('the peer and the broker in turns: throughput at the same moments');
    runs.versusPeer = await runVersusPeer(start, oneProcess, context);
  }
  if (options.long) {
    say(`broker, ${start.name}: long run, token exchange`);
    const run = await runBroker('long-oauth2-token', start, tokenExchangeTarget, options.longDuration, context);
    runs.long = { run, trend: earlyAndLate(run.measurement) };
  }
  if (options.profile && !options.postgresOnly) {
    say('broker, one worker, under --cpu-prof: token exchange (not in the figures: the profiler slows what it watches)');
    runs.profiled = await runBroker('profiled-oauth2-token', ONE_WORKER, tokenExchangeTarget, options.duration, context, { profiled: true });
  }
  if (options.postgres) {
    say('PostgreSQL: starting the server');
    const postgres = await startPostgres();
    try {
      runs.replicas = [];
      const builds: Build[] = [...(options.baseline ? [{ name: 'baseline' as const, root: options.baseline }] : []), { name: 'this' }];
      for (const replicas of options.replicas) {
        for (const build of builds) {
          say(`broker${build.root ? ` (${build.name}: ${build.root})` : ''} on PostgreSQL: ${replicas} replica(s) on one database`);
          runs.replicas.push(await runReplicas(replicas, build, postgres, context));
        }
      }
      if (options.replicas.length > 1) {
        say(`broker on PostgreSQL: ${options.replicas.join(', ')} replicas, each on a database of its own, in turns`);
        runs.replicasInTurns = await runReplicasInTurns(options.replicas, postgres, context);
      }
    } finally {
      await postgres.stop();
    }
  }
  return runs;
}

function buildReport({ peer, exchange, credentials, dpop, oneWorker, versusPeer, long, profiled, replicas, replicasInTurns }: Runs, options: Options): Report {
  const defaultRuns = [exchange, credentials].flatMap((run) => (run ? [run.measurement] : []));
  const sqliteRuns = [...defaultRuns, ...(oneWorker ? [oneWorker.measurement] : [])];
  const replicaRuns = (replicas ?? []).map((run) => run.measurement);
  const brokerRuns = [...sqliteRuns, ...(dpop ? [dpop.plain, dpop.bound] : []), ...replicaRuns];
  const inTurns = versusPeer ? [...versusPeer.brokers.values(), ...versusPeer.baseline.values()] : [];
  // The default start is held to the full targets; one process (measured beside it, or alone with --workers 1) to its own.
  const defaultLimits = startOf(options).workers === 1 ? TARGETS.oneWorker : TARGETS.defaultStart;
  const versus = (which: Versus) => {
    const broker = versusPeer?.brokers.get(which);
    return versusPeer && broker ? { versus: { broker, peer: versusPeer.peer } } : {};
  };
  const limited = [
    ...(exchange ? [{ run: exchange.measurement, limits: defaultLimits, ...versus('exchange') }] : []),
    ...(credentials ? [{ run: credentials.measurement, limits: defaultLimits, ...versus('credentials') }] : []),
    ...(oneWorker ? [{ run: oneWorker.measurement, limits: TARGETS.oneWorker, ...versus('oneWorker') }] : []),
  ];
  const profiles = [
    ...(profiled?.profile ? [{ target: `${profiled.measurement.target} (profiled run)`, ...profiled.profile }] : []),
    ...(replicas ?? []).flatMap((run) => (run.profile ? [{ target: `${run.measurement.target} (first replica)`, hottest: run.profile }] : [])),
  ];
  return {
    node: process.version,
    platform: `${process.platform}/${process.arch}`,
    cores: availableParallelism(),
    connections: options.connections,
    durationSeconds: options.duration,
    warmupSeconds: options.warmup,
    identities: options.identities,
    runs: [...(peer ? [peer] : []), ...brokerRuns, ...(versusPeer ? [versusPeer.peer, ...inTurns] : []), ...(replicasInTurns ?? [])],
    ratios: [
      ...(peer ? brokerRuns.map((run) => ({ target: run.target, brokerOverPeer: run.reqPerSec / peer.reqPerSec })) : []),
      ...(versusPeer ? inTurns.map((run) => ({ target: run.target, brokerOverPeer: run.reqPerSec / versusPeer.peer.reqPerSec })) : []),
    ],
    ...(long ? { long: long.trend } : {}),
    targets: [
      ...(peer ? targetChecks(limited, peer, long?.trend) : []),
      ...(dpop ? dpopChecks(dpop.plain, dpop.bound) : []),
      ...replicaChecks((replicas ?? []).filter((run) => run.build === 'this'), replicasInTurns),
    ],
    ...(options.baseline ? { baseline: [...(versusPeer ? inTurnsBaseline(versusPeer) : []), ...baselineRatios(replicas ?? [])] } : {}),
    ...(replicas
      ? {
          chain: replicas.map((run) => ({
            target: run.measurement.target,
            eventsPerSecond: run.eventsPerSecond,
            deadlocks: run.server.deadlocks,
            errors: run.server.errors,
            ...(run.postgresCpuMs === undefined ? {} : { postgresCpuMsPerRequest: run.postgresCpuMs }),
          })),
        }
      : {}),
    ...(profiles.length > 0 ? { profiles } : {}),
  };
}

/** One row of the baseline table: a measurement of this build beside the baseline's. */
const beside = (baseline: Measurement, measurement: Measurement): NonNullable<Report['baseline']>[number] => ({
  target: measurement.target,
  baselineReqPerSec: baseline.reqPerSec,
  reqPerSec: measurement.reqPerSec,
  baselineP99Ms: baseline.p99Ms,
  p99Ms: measurement.p99Ms,
  baselineCpuMsPerRequest: baseline.cpuMsPerRequest,
  cpuMsPerRequest: measurement.cpuMsPerRequest,
  baselineLargestRssMB: baseline.largestProcessRssMB,
  largestRssMB: measurement.largestProcessRssMB,
});

/** Each SQLite endpoint of this build beside the baseline's, loaded in the same turns. */
function inTurnsBaseline({ brokers, baseline }: VersusPeer): NonNullable<Report['baseline']> {
  return [...brokers].flatMap(([versus, measurement]) => {
    const before = baseline.get(versus);
    return before ? [beside(before, measurement)] : [];
  });
}

/** Each PostgreSQL run of this build beside the same run of the baseline's, measured just before it. */
function baselineRatios(runs: readonly ReplicaRun[]): NonNullable<Report['baseline']> {
  return runs.flatMap((run, i) => {
    const before = runs[i - 1];
    if (run.build !== 'this' || before?.build !== 'baseline') return [];
    return [beside(before.measurement, run.measurement)];
  });
}

/** Ctrl-C or a kill mid-run: stop the servers, remove the temporary directory, exit as the signal would. */
function stopOnSignal(workDir: string): void {
  const onSignal = (signal: NodeJS.Signals) => {
    say(`${signal}: stopping the servers`);
    void stopAll({ forGood: true }).finally(() => {
      rmSync(workDir, { recursive: true, force: true });
      process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
    });
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
}

async function main(options: Options): Promise<number> {
  ensureBuilt();
  const workDir = mkdtempSync(join(tmpdir(), 'jit-bench-http-'));
  stopOnSignal(workDir);
  try {
    const identity = await createGitHubIdentities(options.identities);
    const profileRoot = options.profile ? (options.profileDir ?? join(workDir, 'profiles')) : undefined;
    const runs = await runAll({ workDir, identity, profileRoot, options });
    const report = buildReport(runs, options);
    // Every response time, kept to merge replicas' latencies, would drown the figures.
    if (options.json) process.stdout.write(`${JSON.stringify(report, (key, value: unknown) => (key === 'okLatenciesMs' ? undefined : value), 2)}\n`);
    else printMarkdown(report);
    if (options.profileDir) say(`profiles kept in ${options.profileDir} (open them in Chrome DevTools, Performance tab)`);
    return warnAboutFailures([...report.runs, ...(runs.long ? [runs.long.run.measurement] : [])]) ? 1 : 0;
  } finally {
    await stopAll();
    rmSync(workDir, { recursive: true, force: true });
  }
}

try {
  process.exitCode = await main(parseOptions(process.argv.slice(2)));
} catch (error) {
  // parseArgs refuses unknown or malformed options with ERR_PARSE_ARGS_* codes: usage errors, explained by their message.
  const explained = error instanceof BenchError || String((error as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS');
  say(explained ? `bench:http: ${(error as Error).message}` : `bench:http failed: ${(error as Error).stack ?? String(error)}`);
  process.exitCode = 1;
}
