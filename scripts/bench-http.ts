/**
 * Loads the built broker over real HTTP, as its own process, side by side with a peer doing
 * comparable work (panva's oidc-provider minting client_credentials JWT access tokens, also its
 * own process), and reports what each costs: req/s, p50/p99 latency, CPU time per request and
 * peak RSS, and the broker/peer throughput ratio. The machine is shared and noisy, so the ratio
 * measured in one run is the figure to compare, not the absolute times.
 *
 *   npm run bench:http                        # 10 s per target, 50 connections, 2 s warm-up
 *   npm run bench:http -- --duration 3        # a quick look
 *   npm run bench:http -- --long              # also 30 s of /oauth2/token: late vs early throughput
 *   npm run bench:http -- --profile           # broker under --cpu-prof: its top self-time functions
 *   npm run bench:http -- --json              # the results as JSON on stdout (progress stays on stderr)
 *
 * More options: --connections N, --warmup S, --long-duration S, --top N,
 * --profile-dir DIR (keep the .cpuprofile files, to open in Chrome DevTools).
 *
 * Runs dist/main.js (building it first when missing or older than src/), each broker run on a
 * fresh temporary database, so no run inherits another's grants. Exits 1 when most responses
 * of a run failed; targets not met are reported, not fatal. Nothing here runs in `npm test`.
 */
import autocannon from 'autocannon';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { SourceMap, type SourceMapPayload } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import YAML from 'yaml';

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

/** What the broker must eventually meet (the other engineer's work); shown, never fatal. */
const TARGETS = { minRatio: 0.5, maxP99Ms: 40, minLateOverEarly: 0.9, maxPeakRssMB: 200 };
/** The early and late windows of the long run, in seconds. */
const LONG_WINDOW_S = 10;

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
  };
}

/** A failure the bench explains itself (bad option, a server that would not start or answer): no stack trace. */
class BenchError extends Error {}
class UsageError extends BenchError {}

/** Progress and warnings: always stderr, so `--json` leaves stdout to the JSON alone. */
const say = (line: string) => process.stderr.write(`${line}\n`);

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
  /** One identity token, used by every request. */
  token: string;
}

/**
 * A GitHub Actions OIDC token as GitHub sends it (RS256, its claim set with string ids), from a
 * key made here. One token for the whole run: every request is the same pipeline job, which is
 * what makes a per-identity cost that grows with history show up.
 */
async function createGitHubIdentity(): Promise<Identity> {
  const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true });
  const kid = 'bench-github-actions';
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' };
  const now = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({
    repository: 'acme/app',
    repository_id: '123456789',
    repository_owner: 'acme',
    repository_owner_id: '987654',
    repository_visibility: 'private',
    ref: 'refs/heads/main',
    ref_type: 'branch',
    sha: 'a94a8fe5ccb19ba61c4c0873d391e987982fbbd3',
    actor: 'octocat',
    actor_id: '583231',
    workflow: 'build',
    workflow_ref: 'acme/app/.github/workflows/build.yml@refs/heads/main',
    job_workflow_ref: 'acme/app/.github/workflows/build.yml@refs/heads/main',
    run_id: '9876543210',
    run_number: '42',
    run_attempt: '1',
    event_name: 'push',
    runner_environment: 'github-hosted',
  })
    .setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' })
    .setIssuer(GITHUB_ISS)
    .setSubject(SUBJECT)
    .setAudience('jit-broker')
    .setIssuedAt(now)
    .setNotBefore(now)
    .setExpirationTime(now + 3600)
    .setJti(randomUUID())
    .sign(privateKey);
  return { jwks: { keys: [jwk] }, token };
}

/**
 * THE bench configuration of the broker, in one place. A GitHub-shaped workload issuer, a
 * low-risk scope granted to the pipeline, and a separation rule on two other scopes (so the
 * separation check runs on every request, as it would in production).
 * When the schema has `limits:`, add very high limits here, so the bench measures the broker's
 * work rather than its refusals (each run uses one identity at thousands of requests a minute).
 */
function benchBrokerConfig({ port, dir, jwks }: { port: number; dir: string; jwks: Identity['jwks'] }): Record<string, unknown> {
  return {
    issuer: `http://127.0.0.1:${port}`,
    listen: { host: '127.0.0.1', port },
    database: join(dir, 'broker.db'),
    clockSkew: '30s',
    scheduler: { interval: '10s' },
    signing: { algorithm: SIGNING_ALG, keyDir: join(dir, 'keys'), rotateEvery: '24h' },
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
  };
}

// --- Child processes ----------------------------------------------------------------------------

interface Child {
  label: string;
  process: ChildProcess;
  pid: number;
  /** The last lines it wrote (stdout and stderr), shown when it fails. */
  tail: string[];
  /** How many lines it wrote: the broker runs at `warn`, so any is worth a look. */
  lines: number;
  /** Its first line on stdout (the peer says there where it listens). */
  firstLine: Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Every child still running, so any way out of the bench stops them all. */
const running = new Set<Child>();
/** Set once the bench is interrupted: no child may start after its siblings were told to stop. */
let stopping = false;
const TAIL_LINES = 30;

/**
 * `node ARGS` as a child whose pid is the server itself (no wrapper), so /proc reads the server.
 * With `ipc`, the child can notice the bench dying even by SIGKILL (its channel closes).
 */
function startChild(label: string, args: string[], env: NodeJS.ProcessEnv, { ipc = false } = {}): Child {
  if (stopping) throw new BenchError(`not starting ${label}: the bench is stopping`);
  const proc = spawn(process.execPath, args, { cwd: ROOT, env, stdio: ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'] });
  const { pid, stdout, stderr } = proc;
  if (pid === undefined || !stdout || !stderr) throw new Error(`${label} could not be started`);
  let onFirstLine: (line: string) => void = () => {};
  const child: Child = {
    label,
    process: proc,
    pid,
    tail: [],
    lines: 0,
    firstLine: new Promise((resolveLine) => (onFirstLine = resolveLine)),
    exited: new Promise((resolveExit) => proc.once('exit', (code, signal) => resolveExit({ code, signal }))),
  };
  createInterface({ input: stdout }).once('line', (line) => onFirstLine(line));
  // Both pipes must be drained, or a chatty child blocks on a full pipe and the bench measures that.
  for (const stream of [stdout, stderr]) {
    createInterface({ input: stream }).on('line', (line) => {
      child.lines += 1;
      child.tail.push(line);
      if (child.tail.length > TAIL_LINES) child.tail.shift();
    });
  }
  running.add(child);
  void child.exited.then(() => running.delete(child));
  return child;
}

/** SIGTERM and wait for a clean exit (which is also when --cpu-prof writes its profile); SIGKILL after 15 s. */
async function stopChild(child: Child): Promise<void> {
  if (child.process.exitCode !== null || child.process.signalCode !== null) return;
  child.process.kill('SIGTERM');
  const killer = setTimeout(() => {
    say(`${child.label} did not stop within 15 s of SIGTERM; killing it`);
    child.process.kill('SIGKILL');
  }, 15_000);
  const { code, signal } = await child.exited;
  clearTimeout(killer);
  if (code !== 0) say(`${child.label} exited with ${signal ?? `code ${code}`}\n${child.tail.join('\n')}`);
}

async function stopAll(): Promise<void> {
  await Promise.all([...running].map(stopChild));
}

/** Rejects as soon as the child exits: a server that dies while we wait for it must not hang the bench. */
function failOnExit(child: Child): Promise<never> {
  return child.exited.then(({ code, signal }) => {
    throw new BenchError(`${child.label} exited (${signal ?? `code ${code}`}) before it was ready:\n${child.tail.join('\n')}`);
  });
}

/** A free loopback port: the broker takes its port from the config file, so it must be chosen before it starts. */
function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolvePort(address.port) : reject(new Error('no port'))));
    });
  });
}

async function waitUntilReady(url: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      if ((await fetch(url)).ok) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new BenchError(`${url} was not ready within ${timeoutMs / 1000} s`);
}

interface BrokerProcess {
  child: Child;
  base: string;
  /** Where --cpu-prof writes this broker's profile, when profiling. */
  profileDir: string | undefined;
}

/** A broker of its own on a fresh directory (database, keys, config), started from dist/ as it is deployed. */
async function startBroker(label: string, workDir: string, identity: Identity, profileRoot: string | undefined): Promise<BrokerProcess> {
  const dir = join(workDir, label);
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const configFile = join(dir, 'broker.yaml');
  writeFileSync(configFile, YAML.stringify(benchBrokerConfig({ port, dir, jwks: identity.jwks })));

  const profileDir = profileRoot === undefined ? undefined : join(profileRoot, label);
  const nodeFlags = profileDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', profileDir];
  // Env overrides of the config (PORT, HOST, BROKER_DB, BROKER_CONFIG) would point it elsewhere.
  const { PORT: _p, HOST: _h, BROKER_DB: _d, BROKER_CONFIG: _c, ...env } = process.env;
  const child = startChild(`broker (${label})`, [...nodeFlags, BROKER_MAIN, '--config', configFile], { ...env, LOG_LEVEL: 'warn' });
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

interface Target {
  name: string;
  url: string;
  method: 'POST';
  headers: Record<string, string>;
  body: string;
}

function tokenExchangeTarget(base: string, identity: Identity): Target {
  return {
    name: 'broker POST /oauth2/token',
    url: `${base}/oauth2/token`,
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: identity.token,
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      scope: SCOPE,
      audience: AUDIENCE,
      task_id: TASK_ID,
    }).toString(),
  };
}

function credentialsTarget(base: string, identity: Identity): Target {
  return {
    name: 'broker POST /v1/credentials',
    url: `${base}/v1/credentials`,
    method: 'POST',
    headers: { authorization: `Bearer ${identity.token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ task_id: TASK_ID, scopes: [SCOPE], audience: AUDIENCE }),
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

/** No token, identity or minted, ever reaches the terminal: error bodies are shown with JWTs blanked. */
const redactJwts = (text: string) => text.replace(/eyJ[\w-]*\.[\w-]*\.[\w-]*/g, '<jwt>');

async function send(target: Target): Promise<{ status: number; text: string }> {
  const response = await fetch(target.url, { method: target.method, headers: target.headers, body: target.body });
  return { status: response.status, text: await response.text() };
}

/** One request before any load: a target that does not answer 2xx with a token is not worth loading. */
async function preflight(target: Target): Promise<void> {
  const { status, text } = await send(target);
  let hasToken = false;
  try {
    hasToken = typeof (JSON.parse(text) as { access_token?: unknown }).access_token === 'string';
  } catch {
    // not JSON: reported below
  }
  if (status < 200 || status > 299 || !hasToken) {
    throw new BenchError(`${target.name} answered ${status} without an access_token: ${redactJwts(text).slice(0, 500)}`);
  }
}

// --- Load and measure ----------------------------------------------------------------------------

interface LoadResult {
  result: autocannon.Result;
  /** 2xx responses in each second of the run, in order (autocannon keeps only their histogram). */
  okPerSecond: number[];
}

function load(target: Target, seconds: number, connections: number): Promise<LoadResult> {
  const okPerSecond: number[] = Array.from({ length: seconds }, () => 0);
  let started = performance.now();
  return new Promise((resolveLoad, reject) => {
    // The callback form: it returns the instance, whose events give the per-second counts.
    const instance = autocannon(
      { url: target.url, method: target.method, headers: target.headers, body: target.body, connections, duration: seconds },
      (error: unknown, result) => (error ? reject(error as Error) : resolveLoad({ result, okPerSecond })),
    );
    instance.on('start', () => (started = performance.now()));
    instance.on('response', (_client, statusCode) => {
      if (statusCode < 200 || statusCode > 299) return;
      // A straggler answered after the last full second counts in the last one.
      const second = Math.min(seconds - 1, Math.floor((performance.now() - started) / 1000));
      okPerSecond[second] = (okPerSecond[second] ?? 0) + 1;
    });
  });
}

/** CPU seconds (user + system) the process has used so far, from /proc/<pid>/stat. */
function cpuSeconds(pid: number, ticksPerSecond: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Field 2 (comm) is in parentheses and may hold spaces: count fields after its closing one.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond; // utime, stime: fields 14 and 15
}

/** Peak resident set (VmHWM) of the process over its life so far, in bytes. */
function peakRssBytes(pid: number): number {
  const match = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return match ? Number(match[1]) * 1024 : Number.NaN;
}

function clockTicksPerSecond(): number {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
}

interface Measurement {
  target: string;
  seconds: number;
  requests: number;
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  cpuMsPerRequest: number;
  peakRssMB: number;
  okPerSecond: number[];
  /** Lines the server wrote during the run (the broker logs at warn: there should be none). */
  logLines: number;
  /** What one request answered, when many failed. */
  failureSample?: string;
}

/** Warm up (JIT, statement cache, connections), then load while reading the child's CPU time around the run. */
async function measure(target: Target, child: Child, options: Options, seconds: number): Promise<Measurement> {
  if (options.warmup > 0) await load(target, options.warmup, options.connections);
  const ticks = clockTicksPerSecond();
  const cpuBefore = cpuSeconds(child.pid, ticks);
  const linesBefore = child.lines;
  say(`  ${target.name}: ${seconds} s at ${options.connections} connections`);
  const { result, okPerSecond } = await load(target, seconds, options.connections);
  const cpuUsed = cpuSeconds(child.pid, ticks) - cpuBefore;
  const requests = result.requests.total;
  const measurement: Measurement = {
    target: target.name,
    seconds: result.duration,
    requests,
    ok: result['2xx'],
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    statusCodes: Object.fromEntries(Object.entries(result.statusCodeStats ?? {}).map(([code, { count }]) => [code, count ?? 0])),
    reqPerSec: result['2xx'] / result.duration,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    cpuMsPerRequest: requests > 0 ? (cpuUsed * 1000) / requests : Number.NaN,
    peakRssMB: peakRssBytes(child.pid) / 1e6,
    okPerSecond,
    logLines: child.lines - linesBefore,
  };
  if (failures(measurement) > 0) measurement.failureSample = await sampleFailure(target);
  return measurement;
}

const failures = (m: Measurement) => m.non2xx + m.errors;
const mostlyFailed = (m: Measurement) => m.ok === 0 || failures(m) > m.ok;

/** One more request, to show what the failing ones were answered (JWTs blanked). */
async function sampleFailure(target: Target): Promise<string> {
  try {
    const { status, text } = await send(target);
    return `${status} ${redactJwts(text).slice(0, 300)}`;
  } catch (error) {
    return `no answer: ${(error as Error).message}`;
  }
}

// --- Profiles ------------------------------------------------------------------------------------

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface CpuProfile {
  nodes: { id: number; callFrame: CallFrame; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
}

interface HotFunction {
  function: string;
  location: string;
  selfMs: number;
  selfPercent: number;
  /** The caller under which it spent most of that time: a generic helper (`rows`) says little without it. */
  calledFrom: string;
}

const sourceMaps = new Map<string, SourceMap | undefined>();

/** tsc's source map for a file of dist/, read once. */
function sourceMapOf(file: string): SourceMap | undefined {
  if (!sourceMaps.has(file)) {
    const mapFile = `${file}.map`;
    sourceMaps.set(file, existsSync(mapFile) ? new SourceMap(JSON.parse(readFileSync(mapFile, 'utf8')) as SourceMapPayload) : undefined);
  }
  return sourceMaps.get(file);
}

/**
 * Where a function lives, as the person fixing it would look for it: broker code mapped from
 * dist/ back to its line in src/, other files relative to the repository (node_modules/...),
 * node's own modules by their node: name. Lines are 1-based, as editors count.
 */
function locate(frame: CallFrame): string {
  if (!frame.url) return '';
  if (!frame.url.startsWith('file://')) return `${frame.url}:${frame.lineNumber + 1}`;
  const file = fileURLToPath(frame.url);
  const entry = sourceMapOf(file)?.findEntry(frame.lineNumber, frame.columnNumber);
  if (entry && 'originalSource' in entry) {
    return `${relative(ROOT, resolve(dirname(file), entry.originalSource))}:${entry.originalLine + 1}`;
  }
  return `${relative(ROOT, file)}:${frame.lineNumber + 1}`;
}

const nameOf = (frame: CallFrame) => frame.functionName || '(anonymous)';

/**
 * Self time per function over the broker's whole life (start-up and warm-up are a small part),
 * highest first. Nodes are call-tree positions, so one function appears under many; summing by
 * name and place gives its total self time. `(idle)` is waiting for work, not work: left out.
 */
function hottestFunctions(profile: CpuProfile, top: number): HotFunction[] {
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  const parentOf = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id);
  const places = new Map<number, string>(); // node id -> location, so each frame is source-mapped once
  const placeOf = (id: number, frame: CallFrame) => places.get(id) ?? places.set(id, locate(frame)).get(id) ?? '';

  const functions = new Map<string, { function: string; location: string; micros: number; callers: Map<string, number> }>();
  profile.samples.forEach((id, i) => {
    const node = nodes.get(id);
    if (!node || node.callFrame.functionName === '(idle)') return;
    const micros = profile.timeDeltas[i] ?? 0;
    const location = placeOf(id, node.callFrame);
    const key = `${nameOf(node.callFrame)}\u0000${location}`;
    const entry = functions.get(key) ?? { function: nameOf(node.callFrame), location, micros: 0, callers: new Map() };
    entry.micros += micros;
    const parentId = parentOf.get(id);
    const parent = parentId === undefined ? undefined : nodes.get(parentId);
    // `(root)` is the profile's own top, not a caller (it parents GC and idle time).
    const caller = parent && parent.callFrame.functionName !== '(root)' ? `${nameOf(parent.callFrame)} ${placeOf(parent.id, parent.callFrame)}`.trim() : '';
    entry.callers.set(caller, (entry.callers.get(caller) ?? 0) + micros);
    functions.set(key, entry);
  });

  const total = [...functions.values()].reduce((sum, entry) => sum + entry.micros, 0);
  const topCaller = (callers: Map<string, number>) => [...callers].sort((a, b) => b[1] - a[1])[0]?.[0] ?? '';
  return [...functions.values()]
    .sort((a, b) => b.micros - a.micros)
    .slice(0, top)
    .map((entry) => ({
      function: entry.function,
      location: entry.location,
      selfMs: entry.micros / 1000,
      selfPercent: (100 * entry.micros) / total,
      calledFrom: topCaller(entry.callers),
    }));
}

/** The newest profile in `dir`: a kept --profile-dir may hold earlier runs' too. */
function readProfile(dir: string): CpuProfile {
  const files = existsSync(dir) ? readdirSync(dir).filter((name) => name.endsWith('.cpuprofile')).map((name) => join(dir, name)) : [];
  const newest = files.sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
  if (newest === undefined) throw new BenchError(`no .cpuprofile in ${dir}: did the broker exit cleanly?`);
  return JSON.parse(readFileSync(newest, 'utf8')) as CpuProfile;
}

// --- Runs ----------------------------------------------------------------------------------------

interface BrokerRun {
  measurement: Measurement;
  profile?: HotFunction[];
}

/** One broker endpoint on a broker of its own: start, check, load, stop, read its profile. */
async function runBroker(
  label: string,
  makeTarget: (base: string, identity: Identity) => Target,
  seconds: number,
  context: { workDir: string; identity: Identity; profileRoot: string | undefined; options: Options },
): Promise<BrokerRun> {
  const broker = await startBroker(label, context.workDir, context.identity, context.profileRoot);
  let measurement: Measurement;
  try {
    const target = makeTarget(broker.base, context.identity);
    await preflight(target);
    measurement = await measure(target, broker.child, context.options, seconds);
  } finally {
    await stopChild(broker.child);
  }
  if (broker.profileDir === undefined) return { measurement };
  return { measurement, profile: hottestFunctions(readProfile(broker.profileDir), context.options.top) };
}

async function runPeer(options: Options): Promise<Measurement> {
  const peer = await startPeer();
  try {
    const target = peerTarget(peer.ready);
    await preflight(target);
    return await measure(target, peer.child, options, options.duration);
  } finally {
    await stopChild(peer.child);
  }
}

interface LongRun {
  measurement: Measurement;
  earlyReqPerSec: number;
  lateReqPerSec: number;
  lateOverEarly: number;
}

/** Throughput of the first and the last LONG_WINDOW_S seconds: a cost that grows with history shows as late < early. */
function earlyAndLate(measurement: Measurement): LongRun {
  const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
  const early = mean(measurement.okPerSecond.slice(0, LONG_WINDOW_S));
  const late = mean(measurement.okPerSecond.slice(-LONG_WINDOW_S));
  return { measurement, earlyReqPerSec: early, lateReqPerSec: late, lateOverEarly: late / early };
}

// --- Report --------------------------------------------------------------------------------------

interface Report {
  node: string;
  platform: string;
  connections: number;
  durationSeconds: number;
  warmupSeconds: number;
  profiled: boolean;
  runs: Measurement[];
  ratios: { target: string; brokerOverPeer: number }[];
  long?: Omit<LongRun, 'measurement'> & { measurement: Measurement };
  targets: { what: string; measured: string; met: boolean | null }[];
  profiles?: { target: string; hottest: HotFunction[] }[];
}

function targetChecks(brokerRuns: Measurement[], peer: Measurement, long: LongRun | undefined): Report['targets'] {
  const checks: Report['targets'] = [];
  for (const run of brokerRuns) {
    const ratio = run.reqPerSec / peer.reqPerSec;
    checks.push({ what: `${run.target}: broker/peer >= ${TARGETS.minRatio}`, measured: ratio.toFixed(2), met: ratio >= TARGETS.minRatio });
    checks.push({ what: `${run.target}: p99 <= ${TARGETS.maxP99Ms} ms`, measured: `${run.p99Ms} ms`, met: run.p99Ms <= TARGETS.maxP99Ms });
  }
  for (const run of [...brokerRuns, ...(long ? [long.measurement] : [])]) {
    checks.push({
      what: `${run.target}${run === long?.measurement ? ' (long)' : ''}: peak RSS <= ${TARGETS.maxPeakRssMB} MB`,
      measured: `${run.peakRssMB.toFixed(0)} MB`,
      met: run.peakRssMB <= TARGETS.maxPeakRssMB,
    });
  }
  checks.push(
    long
      ? { what: `late/early >= ${TARGETS.minLateOverEarly}`, measured: long.lateOverEarly.toFixed(2), met: long.lateOverEarly >= TARGETS.minLateOverEarly }
      : { what: `late/early >= ${TARGETS.minLateOverEarly}`, measured: 'not measured (run with --long)', met: null },
  );
  return checks;
}

const fixed = (value: number, digits: number) => (Number.isFinite(value) ? value.toFixed(digits) : 'n/a');

function printMarkdown(report: Report): void {
  const out = (line = '') => process.stdout.write(`${line}\n`);
  const ratioOf = (target: string) => report.ratios.find((r) => r.target === target)?.brokerOverPeer;
  out(`\nnode ${report.node}, ${report.platform}; ${report.connections} connections, ${report.durationSeconds} s each after ${report.warmupSeconds} s of warm-up${report.profiled ? '; BROKER PROFILED (--cpu-prof): its figures are slowed by the profiler' : ''}\n`);
  out('| target | req/s | p50 | p99 | CPU per request | peak RSS | non-2xx / errors | broker/peer |');
  out('| --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const run of report.runs) {
    const ratio = ratioOf(run.target);
    out(
      `| ${run.target} | ${fixed(run.reqPerSec, 0)} | ${run.p50Ms} ms | ${run.p99Ms} ms | ${fixed(run.cpuMsPerRequest, 2)} ms | ${fixed(run.peakRssMB, 0)} MB | ${run.non2xx} / ${run.errors} | ${ratio === undefined ? '' : ratio.toFixed(2)} |`,
    );
  }
  if (report.long) {
    const { measurement: m, earlyReqPerSec, lateReqPerSec, lateOverEarly } = report.long;
    out(`\nLong run, one identity, ${m.target}, ${m.seconds} s (${m.ok} tokens; p99 ${m.p99Ms} ms; peak RSS ${fixed(m.peakRssMB, 0)} MB):\n`);
    out(`| first ${LONG_WINDOW_S} s | last ${LONG_WINDOW_S} s | late/early |`);
    out('| --- | --- | --- |');
    out(`| ${fixed(earlyReqPerSec, 0)} req/s | ${fixed(lateReqPerSec, 0)} req/s | ${fixed(lateOverEarly, 2)} |`);
    out(`\nper second: ${m.okPerSecond.join(' ')}`);
  }
  out('\nTargets:\n');
  out('| target | measured | met |');
  out('| --- | --- | --- |');
  for (const check of report.targets) out(`| ${check.what} | ${check.measured} | ${check.met === null ? '-' : check.met ? 'yes' : 'NO'} |`);
  for (const profile of report.profiles ?? []) {
    out(`\nHottest functions by self time, ${profile.target} (idle excluded):\n`);
    out('| self ms | self % | function | where | mostly called from |');
    out('| --- | --- | --- | --- | --- |');
    for (const hot of profile.hottest) {
      out(`| ${hot.selfMs.toFixed(0)} | ${hot.selfPercent.toFixed(1)} | ${hot.function} | ${hot.location} | ${hot.calledFrom} |`);
    }
  }
}

/** Failures are said on stderr, loudly when they are most of a run, so no one quotes a table of 4xx timings. */
function warnAboutFailures(runs: Measurement[]): boolean {
  let failed = false;
  for (const run of runs) {
    if (run.logLines > 0) say(`note: ${run.target}: the server wrote ${run.logLines} log lines during the run`);
    if (failures(run) === 0) continue;
    const codes = Object.entries(run.statusCodes).map(([code, count]) => `${code}: ${count}`).join(', ');
    const detail = `${run.non2xx} non-2xx and ${run.errors} errors (${run.timeouts} timeouts) of ${run.requests} responses [${codes}]; one of them: ${run.failureSample ?? '?'}`;
    if (mostlyFailed(run)) {
      failed = true;
      say(`\n!!! ${run.target}: MOST RESPONSES FAILED: its figures measure refusals, not issuance.\n!!! ${detail}\n`);
    } else {
      say(`warning: ${run.target}: ${detail}`);
    }
  }
  return failed;
}

// --- Main ----------------------------------------------------------------------------------------

async function main(options: Options): Promise<number> {
  ensureBuilt();
  const workDir = mkdtempSync(join(tmpdir(), 'jit-bench-http-'));
  const profileRoot = options.profile ? (options.profileDir ?? join(workDir, 'profiles')) : undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    stopping = true;
    say(`${signal}: stopping the servers`);
    void stopAll().finally(() => {
      rmSync(workDir, { recursive: true, force: true });
      process.exit(130);
    });
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    const identity = await createGitHubIdentity();
    const context = { workDir, identity, profileRoot, options };
    say('peer: oidc-provider, client_credentials, JWT access tokens');
    const peer = await runPeer(options);
    say('broker: token exchange');
    const exchange = await runBroker('oauth2-token', tokenExchangeTarget, options.duration, context);
    say('broker: credentials API');
    const credentials = await runBroker('v1-credentials', credentialsTarget, options.duration, context);
    let long: LongRun | undefined;
    let longProfile: HotFunction[] | undefined;
    if (options.long) {
      say('broker: long run, token exchange');
      const run = await runBroker('long-oauth2-token', tokenExchangeTarget, options.longDuration, context);
      long = earlyAndLate(run.measurement);
      longProfile = run.profile;
    }

    const brokerRuns = [exchange.measurement, credentials.measurement];
    const report: Report = {
      node: process.version,
      platform: `${process.platform}/${process.arch}`,
      connections: options.connections,
      durationSeconds: options.duration,
      warmupSeconds: options.warmup,
      profiled: options.profile,
      runs: [peer, ...brokerRuns],
      ratios: brokerRuns.map((run) => ({ target: run.target, brokerOverPeer: run.reqPerSec / peer.reqPerSec })),
      ...(long ? { long } : {}),
      targets: targetChecks(brokerRuns, peer, long),
      ...(options.profile
        ? {
            profiles: [
              { target: exchange.measurement.target, hottest: exchange.profile ?? [] },
              { target: credentials.measurement.target, hottest: credentials.profile ?? [] },
              ...(long ? [{ target: `${long.measurement.target} (long)`, hottest: longProfile ?? [] }] : []),
            ],
          }
        : {}),
    };
    if (options.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    else printMarkdown(report);
    if (options.profileDir) say(`profiles kept in ${options.profileDir} (open them in Chrome DevTools, Performance tab)`);
    return warnAboutFailures([...report.runs, ...(long ? [long.measurement] : [])]) ? 1 : 0;
  } finally {
    await stopAll();
    rmSync(workDir, { recursive: true, force: true });
  }
}

try {
  process.exitCode = await main(parseOptions(process.argv.slice(2)));
} catch (error) {
  // parseArgs refuses unknown or malformed options with ERR_PARSE_ARGS_* codes: a usage error, explained by its message.
  const explained = error instanceof BenchError || String((error as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS');
  say(explained ? `bench:http: ${(error as Error).message}` : `bench:http failed: ${(error as Error).stack ?? String(error)}`);
  process.exitCode = 1;
}
