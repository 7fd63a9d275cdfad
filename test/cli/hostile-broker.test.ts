import { execFileSync, spawn } from 'node:child_process';
import { lstatSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jit, jitBundle } from '../helpers/jit-process.js';
import { tempDir } from '../helpers/temp.js';

/**
 * The CLI against a broker (or something in its place) that answers badly: what reaches the
 * terminal is escaped, what reaches stdout is a token or nothing, what it reads is bounded, and
 * its exit codes say what the README's table says.
 */

let answer: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => res.end();
let server: Server;
let url: string;
const ESC = '\x1b]0;pwned\x07\x1b[2J';
const b64 = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
/** Well-shaped identity tokens (the CLI reads their exp, never their signature). */
const identity = (expiresIn: number) => `${b64({ alg: 'ES256' })}.${b64({ sub: 'x', exp: Math.floor(Date.now() / 1000) + expiresIn })}.c2ln`;
const fresh = identity(3600);
const env = (extra: Record<string, string> = {}) => ({ BROKER_URL: url, BROKER_IDENTITY_TOKEN: fresh, ...extra });
const json = (res: ServerResponse, status: number, body: unknown) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
const request = ['request', '--scope', 'a', '--audience', 'b', '--task', 't'];
const view = { request_id: 'r1', status: 'pending_approval', requester: { iss: 'i', sub: 's' }, task_id: 't', scopes: ['a'], audience: 'b', ttl_seconds: 60, justification: null, break_glass: false, digest: 'd'.repeat(64), approvals_required: 1, approvals: [], created_at: '2026-01-01T00:00:00Z', expires_at: '2026-01-01T00:00:00Z' };

beforeAll(async () => {
  server = createServer((req, res) => answer(req, res));
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((done) => server.close(done));
});

describe('text from the broker', () => {
  it('reaches the terminal escaped: the pending answer, the waiting line, a decision, a verdict', async () => {
    answer = (_req, res) => json(res, 202, { request_id: 'r1', status: 'pending_approval', approvals_required: ESC, digest: 'd'.repeat(64), approvals: [] });
    const pending = await jit([...request, '--wait', '0'], { env: env() });
    expect(pending.code).toBe(75);

    answer = (req, res) => (req.method === 'POST' ? json(res, 202, { ...view, approvals_required: 1 }) : json(res, 200, { ...view, approvals_required: ESC }));
    const waiting = await jit([...request, '--wait', '1s'], { env: env({ JIT_POLL_INTERVAL: '200ms' }) });
    expect(waiting.code).toBe(75);

    answer = (req, res) => (req.method === 'GET' ? json(res, 200, view) : json(res, 200, { ...view, status: `approved${ESC}` }));
    const decided = await jit(['approve', 'r1', '--reason', 'ok', '--yes'], { env: env() });
    expect(decided.code).toBe(0);

    answer = (_req, res) => json(res, 200, { ok: true, events: ESC, head: ESC });
    const verified = await jit(['audit', 'verify'], { env: env() });

    for (const run of [pending, waiting, decided, verified]) expect(run.stdout + run.stderr).not.toContain('\x1b');
    expect(verified.stdout).toContain('\\u{1b}');
  });

  it('reaches the terminal escaped in a refusal too: the problem\'s detail is the broker\'s text', async () => {
    answer = (_req, res) => res.writeHead(403, { 'content-type': 'application/problem+json' }).end(JSON.stringify({ type: 'urn:jit-broker:problem:policy_denied', title: 'Denied by policy', status: 403, detail: `${ESC}\u202erefused` }));
    const refused = await jit(request, { env: env() });
    expect(refused.code).toBe(3);
    expect(refused.stdout + refused.stderr).not.toMatch(/[\x1b\u009b\u202e]/);
    expect(refused.stderr).toContain('\\u{1b}');
  });

  it('reaches the terminal escaped in JSON too, C1 and bidi controls included, and in the entitlements summary', async () => {
    const hostile = `${ESC}\u009b31m\u202eevil`;
    answer = (_req, res) => json(res, 200, { ok: true, events: 1, head: hostile });
    const verified = await jit(['audit', 'verify', '--json'], { env: env() });
    answer = (_req, res) => json(res, 200, { since: hostile, items: [], next_cursor: null });
    const entitlements = await jit(['audit', 'entitlements'], { env: env() });
    for (const run of [verified, entitlements]) {
      expect(run.stdout + run.stderr).not.toMatch(/[\x1b\u009b\u202e]/);
    }
    // Escaped as JSON escapes: the value a program parses is the broker's, unchanged.
    expect(verified.stdout).toContain('\\u202e');
    expect(JSON.parse(verified.stdout).head).toBe(hostile);
  });
});

describe('exit codes of arguments the broker refuses, and of a sign-in that cannot reach it', () => {
  it('2 (usage) when the broker answers 400 invalid_request naming fields of what the command was given', async () => {
    answer = (_req, res) => res.writeHead(400, { 'content-type': 'application/problem+json' }).end(JSON.stringify({ type: 'urn:jit-broker:problem:invalid_request', title: 'Invalid request', status: 400, detail: 'Invalid query: limit: must be one whole number from 1 to 1000', errors: [{ pointer: '#/limit', detail: 'must be one whole number from 1 to 1000' }] }));
    const run = await jit(['requests', '--limit', '0'], { env: env() });
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('limit');
  });

  it('69 when jit login cannot reach the broker, or the broker answers 503', async () => {
    answer = (_req, res) => res.writeHead(503).end();
    expect((await jit(['login', '--no-browser'], { env: { BROKER_URL: url } })).code).toBe(69);
    expect((await jit(['login', '--no-browser'], { env: { BROKER_URL: 'http://127.0.0.1:9' } })).code).toBe(69);
  });
});

describe('jit login against a sign-in document with plain-http endpoints', () => {
  /** The broker's /console/config.json, naming a discovery document it serves too, with `endpoints`. */
  const signIn = (endpoints: Record<string, string>) => (req: IncomingMessage, res: ServerResponse) => {
    const issuer = 'https://sso.example.com';
    if (req.url === '/console/config.json') return json(res, 200, { issuer, discovery_url: `${url}/discovery`, client_id: 'c', cli_client_id: 'cli', scopes: ['openid'] });
    return json(res, 200, { issuer, authorization_endpoint: `${issuer}/authorize`, token_endpoint: `${issuer}/token`, jwks_uri: `${issuer}/jwks`, ...endpoints });
  };

  it('refuses an SSO endpoint off this machine over plain http, before anything is sent to it: the code and its verifier, or the keys', async () => {
    for (const [name, value] of [['token_endpoint', 'http://sso.example.com/token'], ['jwks_uri', 'http://sso.example.com/jwks'], ['authorization_endpoint', 'http://sso.example.com/authorize']]) {
      answer = signIn({ [name as string]: value as string });
      const run = await jit(['login', '--no-browser', '--timeout', '1s'], { env: { BROKER_URL: url } });
      expect({ code: run.code, stdout: run.stdout, stderr: run.stderr }, name).toEqual({
        code: 1,
        stdout: '',
        stderr: `jit login: the SSO's ${name} is ${value}: plain http to another machine, where anyone on the way could take the sign-in; it must be https\n`,
      });
    }
    // https, or the broker's own origin (which its URL was allowed to be), is where a sign-in goes.
    answer = signIn({ token_endpoint: `${url}/token` });
    const run = await jit(['login', '--no-browser', '--timeout', '1s'], { env: { BROKER_URL: url } });
    expect(run.stderr).toContain('Sign in at https://sso.example.com in your browser');
    expect(run.stderr).toContain('no answer from the browser in time');
  });
});

describe('an issued answer', () => {
  it('puts a token on stdout, or nothing: no JWT in it is a failure', async () => {
    for (const accessToken of [`${ESC}evil`, undefined, 42]) {
      answer = (_req, res) => json(res, 201, { request_id: 'r1', status: 'issued', access_token: accessToken, token_type: 'Bearer' });
      const run = await jit(request, { env: env() });
      expect({ code: run.code, stdout: run.stdout }).toEqual({ code: 1, stdout: '' });
      expect(run.stderr).toContain('gave no token');
    }
  });
});

describe('exit codes of the token exchange (an agent acting, --actor-token)', () => {
  const delegated = (extra: Record<string, string> = {}) => jit([...request, '--actor-token', 'env'], { env: env({ JIT_ACTOR_TOKEN: fresh, ...extra }) });

  it('69 for the broker\'s own 503, saying when to retry as it says; a Retry-After that is no number of seconds is not shown', async () => {
    answer = (_req, res) => res.writeHead(503, { 'content-type': 'application/problem+json', 'retry-after': '5' }).end(JSON.stringify({ type: 'urn:jit-broker:problem:unavailable', title: 'Unavailable', status: 503, detail: 'The broker could not reach its database.' }));
    const unavailable = await jit(request, { env: env() });
    expect(unavailable.code).toBe(69);
    expect(unavailable.stderr).toContain('(retry after 5s)');
    answer = (_req, res) => res.writeHead(503, { 'retry-after': 'Wed, 21 Oct 2026 07:28:00 GMT' }).end();
    const dated = await jit(request, { env: env() });
    expect(dated.code).toBe(69);
    expect(dated.stderr).not.toContain('retry after');
  });

  it('69 when a proxy answers 502, 503 or 504 with its own page', async () => {
    for (const status of [502, 503, 504]) {
      answer = (_req, res) => res.writeHead(status, { 'content-type': 'text/html' }).end('<html>Bad Gateway</html>');
      expect((await delegated()).code).toBe(69);
    }
  });

  it('5 for an expired subject or actor token, 4 for one refused otherwise', async () => {
    answer = (_req, res) => json(res, 400, { error: 'invalid_request', error_description: 'The subject_token was not accepted.' });
    expect((await delegated({ BROKER_IDENTITY_TOKEN: identity(-60) })).code).toBe(5);
    expect((await delegated()).code).toBe(4);
    answer = (_req, res) => json(res, 400, { error: 'invalid_request', error_description: 'The actor_token was not accepted.' });
    const actorExpired = await delegated({ JIT_ACTOR_TOKEN: identity(-60) });
    expect(actorExpired.code).toBe(5);
    expect(actorExpired.stderr).toContain('the actor token');
    expect((await delegated()).code).toBe(4);
    // Any other bad request naming no field stays a failure of the request, as at /v1; naming fields, it is the command's arguments.
    answer = (_req, res) => json(res, 400, { error: 'invalid_request', error_description: 'The scope parameter is missing.' });
    expect((await delegated()).code).toBe(1);
    answer = (_req, res) => json(res, 400, { error: 'invalid_request', error_description: 'Invalid body: scope: Required', errors: [{ pointer: '#/scope', detail: 'Required' }] });
    expect((await delegated()).code).toBe(2);
  });
});

describe('what the CLI reads', () => {
  it('stops reading an answer past 32 MiB', { timeout: 60_000 }, async () => {
    const MiB = 1024 * 1024;
    let sent = 0;
    answer = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"items":[],"x":"');
      const chunk = Buffer.alloc(MiB, 0x61);
      const pump = () => {
        while (sent < 100 * MiB && !res.destroyed) {
          sent += MiB;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end('"}');
      };
      res.on('close', () => undefined);
      pump();
    };
    const run = await jit(['requests'], { env: env() });
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('larger than 32 MiB');
    expect(sent).toBeLessThan(64 * MiB);
  });

  it('gives up on an answer that stops midway, past JIT_TIMEOUT or on a broken connection: 69, naming the broker', async () => {
    const delegated = [...request, '--actor-token', 'env'];
    const stalls = (_req: IncomingMessage, res: ServerResponse) => res.writeHead(200, { 'content-type': 'application/json' }).write('{"items":[');
    const breaks = (_req: IncomingMessage, res: ServerResponse) => {
      res.writeHead(200, { 'content-type': 'application/json' }).write('{"items":[', () => res.destroy());
    };
    for (const [name, serve] of [['stalls', stalls], ['breaks', breaks]] as const) {
      answer = serve;
      for (const args of [['requests'], delegated]) {
        const run = await jit(args, { env: env({ JIT_TIMEOUT: '1s', JIT_ACTOR_TOKEN: fresh }) });
        expect({ code: run.code, stdout: run.stdout }, `${name}: ${args[0]}`).toEqual({ code: 69, stdout: '' });
        expect(run.stderr, `${name}: ${args[0]}`).toMatch(new RegExp(`^jit \\w+: the answer from ${url} stopped before its end \\(.+\\)\\n$`));
      }
    }
  });
});

describe('a listing whose cursors do not end', () => {
  /**
   * Pages of one request each, the next cursor from `next`; past 50 pages the listing ends, so a
   * jit that would follow it for ever ends too, and the test fails rather than hangs.
   */
  const cycling = (next: (cursor: string | null) => string) => {
    const asked: (string | null)[] = [];
    answer = (req, res) => {
      const cursor = new URL(req.url ?? '/', url).searchParams.get('cursor');
      asked.push(cursor);
      json(res, 200, { items: [{ ...view, request_id: `r${asked.length}` }], next_cursor: asked.length > 50 ? null : next(cursor) });
    };
    return asked;
  };

  it('stops when the broker gives again a cursor already followed, saying the listing did not end (1: an answer jit cannot use)', async () => {
    for (const [name, next] of [
      ['the same cursor', () => 'c1'],
      ['a cycle of two', (cursor: string | null) => (cursor === 'c1' ? 'c2' : 'c1')],
    ] as const) {
      for (const args of [['requests', '--all'], ['audit', 'duties', '--duty', 'd', '--identifier', 'i', '--all', '--json'], ['approvals']]) {
        const asked = cycling(next);
        const run = await jit(args, { env: env() });
        expect({ code: run.code, stdout: run.stdout }, `${name}: ${args[0]}`).toEqual({ code: 1, stdout: '' });
        expect(run.stderr, `${name}: ${args[0]}`).toMatch(/^jit \w+: the broker's listing \/v1\/[\w/-]+ did not end: it gave again the cursor of a page already read; nothing is printed\n$/);
        expect(asked.length, `${name}: ${args[0]}`).toBeLessThanOrEqual(3);
      }
    }
  });

  it('still reads every page when each gives a new cursor, an empty page too (a filtered listing\'s page may hold none)', async () => {
    const asked: (string | null)[] = [];
    answer = (req, res) => {
      const cursor = new URL(req.url ?? '/', url).searchParams.get('cursor');
      asked.push(cursor);
      json(res, 200, asked.length === 3 ? { items: [{ ...view, request_id: 'r3' }], next_cursor: null } : { items: asked.length === 1 ? [view] : [], next_cursor: `c${asked.length}` });
    };
    const run = await jit(['requests', '--all', '--json'], { env: env() });
    expect(run.code).toBe(0);
    expect((JSON.parse(run.stdout) as { request_id: string }[]).map((item) => item.request_id)).toEqual(['r1', 'r3']);
    expect(asked).toEqual([null, 'c1', 'c2']);
  });
});

describe('an export', () => {
  /** Streams `lines` NDJSON rows, one every `everyMs`, then ends (or, with `stall`, stops sending and never ends). */
  const streaming = (lines: number, everyMs: number, stall = false) => (_req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    let sent = 0;
    const timer = setInterval(() => {
      if (res.destroyed) return clearInterval(timer);
      if (sent === lines) {
        clearInterval(timer);
        if (!stall) res.end();
        return;
      }
      sent += 1;
      res.write(`{"n":${sent}}\n`);
    }, everyMs);
  };

  it('streams for as long as rows keep coming, past the time one call may take', async () => {
    answer = streaming(8, 250);
    const run = await jit(['audit', 'events', '--format', 'ndjson'], { env: env({ JIT_TIMEOUT: '1s' }) });
    expect(run.code).toBe(0);
    expect(run.stdout.trim().split('\n')).toHaveLength(8);
  });

  it('reaches a terminal escaped, NDJSON still parsing to the same values; redirected, it is the broker\'s bytes', async () => {
    const hostile = `${ESC}\u009b31m\u202eevil`;
    const ndjson = `${JSON.stringify({ sub: hostile })}\n${JSON.stringify({ sub: 'plain' })}\n`;
    const csv = `jti,sub\r\n1,"${hostile}\nsecond line"\r\n`;
    answer = (req, res) => {
      const format = new URL(req.url ?? '/', url).searchParams.get('format');
      res.writeHead(200, { 'content-type': format === 'csv' ? 'text/csv' : 'application/x-ndjson' }).end(format === 'csv' ? csv : ndjson);
    };
    const onTerminal = await jit(['audit', 'events', '--format', 'ndjson'], { env: env(), stdoutTerminal: true });
    const csvOnTerminal = await jit(['audit', 'issuances', '--format', 'csv'], { env: env(), stdoutTerminal: true });
    for (const run of [onTerminal, csvOnTerminal]) {
      expect(run.code).toBe(0);
      expect(run.stdout).not.toMatch(/[\x1b\u009b\u202e\x07]/);
    }
    expect(onTerminal.stdout.trim().split('\n').map((line) => JSON.parse(line).sub)).toEqual([hostile, 'plain']);
    expect(csvOnTerminal.stdout).toBe(`jti,sub\r\n1,"\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{9b}31m\\u{202e}evil\nsecond line"\r\n`);

    const redirected = await jit(['audit', 'events', '--format', 'ndjson'], { env: env() });
    const csvRedirected = await jit(['audit', 'issuances', '--format', 'csv'], { env: env() });
    expect(redirected.stdout).toBe(ndjson);
    expect(csvRedirected.stdout).toBe(csv);
  });

  it('ends quietly, 141 as SIGPIPE would, when the reader of its stdout stops reading (| head)', async () => {
    answer = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      const rows = `${JSON.stringify({ type: 'token.issued', pad: 'x'.repeat(1000) })}\n`.repeat(64);
      const pump = () => {
        while (!res.destroyed) if (!res.write(rows)) return void res.once('drain', pump);
      };
      res.on('error', () => undefined);
      pump();
    };
    const child = spawn(process.execPath, [await jitBundle(), 'audit', 'events', '--format', 'ndjson'], {
      env: { PATH: process.env.PATH, JIT_CONFIG_DIR: tempDir('jit-config-'), ...env() },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    // The reader takes the first rows and goes away, as head does.
    child.stdout.once('data', () => child.stdout.destroy());
    const code = await new Promise<number | null>((done) => child.on('close', (status) => done(status)));
    expect({ code, stderr }).toEqual({ code: 141, stderr: '' });
  });

  it('writes all of a large answer into a pipe its reader drains slowly, before it exits', async () => {
    const item = (i: number) => ({ jti: `j${i}`, request_id: `r${i}`, requester: { iss: 'i', sub: 's' }, task_id: 't'.repeat(1000), scopes: ['a'], audience: 'b', issued_at: '2026-01-01T00:00:00Z', expires_at: '2026-01-01T00:10:00Z', status: 'issued', approvers: [], break_glass: false });
    answer = (_req, res) => json(res, 200, { items: Array.from({ length: 300 }, (_, i) => item(i)), next_cursor: null });
    const child = spawn(process.execPath, [await jitBundle(), 'audit', 'issuances', '--all', '--json'], {
      env: { PATH: process.env.PATH, JIT_CONFIG_DIR: tempDir('jit-config-'), ...env() },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    // The reader is busy at first (as jq can be): the pipe fills, and the rest waits in jit.
    child.stdout.pause();
    setTimeout(() => child.stdout.resume(), 500);
    const code = await new Promise<number | null>((done) => child.on('close', (status) => done(status)));
    expect(code).toBe(0);
    expect(stdout.length).toBeGreaterThan(300_000);
    expect((JSON.parse(stdout) as unknown[]).length).toBe(300);
  });

  it('stops when the rows stop coming for that long, saying what was printed is incomplete (69)', async () => {
    answer = streaming(2, 50, true);
    const run = await jit(['audit', 'events', '--format', 'ndjson'], { env: env({ JIT_TIMEOUT: '1s' }) });
    expect(run.code).toBe(69);
    expect(run.stdout.trim().split('\n')).toHaveLength(2);
    expect(run.stderr).toMatch(/the export from .* stopped before its end \(no data for 1s\); what was printed is incomplete/);
  });
});

describe('--request-id-file', () => {
  it('is mode 0600, even where the file was there before', async () => {
    answer = (_req, res) => json(res, 202, { ...view });
    const path = join(tempDir('jit-request-id-'), 'request.id');
    writeFileSync(path, 'old\n', { mode: 0o644 });
    const run = await jit([...request, '--wait', '0', '--request-id-file', path], { env: env() });
    expect(run.code).toBe(75);
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  it('follows no symbolic link and opens no FIFO planted at its path, as another user could in a shared directory', async () => {
    answer = (_req, res) => json(res, 202, { ...view });
    const dir = tempDir('jit-request-id-');
    // The file the link points to is the caller's: followed, it would be overwritten and made 0600.
    const target = join(dir, 'authorized_keys');
    writeFileSync(target, 'ssh-ed25519 AAAA... me\n', { mode: 0o644 });
    symlinkSync(target, join(dir, 'request.id'));
    const linked = await jit([...request, '--wait', '0', '--request-id-file', join(dir, 'request.id')], { env: env() });
    expect(linked.code).toBe(1);
    expect(linked.stderr).toBe(`jit request: cannot write ${join(dir, 'request.id')} (a symbolic link: not followed); the request r1 was made\n`);
    expect(readFileSync(target, 'utf8')).toBe('ssh-ed25519 AAAA... me\n');
    expect(statSync(target).mode & 0o777).toBe(0o644);
    expect(lstatSync(join(dir, 'request.id')).isSymbolicLink()).toBe(true);

    // A FIFO nobody reads would hold the step forever.
    execFileSync('mkfifo', [join(dir, 'fifo')]);
    const piped = await jit([...request, '--wait', '0', '--request-id-file', join(dir, 'fifo')], { env: env() });
    expect(piped.code).toBe(1);
    expect(piped.stderr).toContain(`cannot write ${join(dir, 'fifo')} (`);
  });
});
