import { closeSync, constants, fchmodSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import { callerOptions, connect, type BrokerClient } from '../client.js';
import type { CliIo } from '../cli-io.js';
import { DPOP_HELP, dpopOptions, withDpop } from '../dpop.js';
import { parseDuration, parseTtlSeconds } from '../duration.js';
import { argumentInMessage, CliError, EXIT, parse, shown, usage } from '../io.js';
import { requestIdArgument } from '../request-id.js';
import { printJson, type IssuedView, type RequestView } from '../views.js';

export const requestHelp = `jit request --scope SCOPE [--scope ...] --audience AUD --task TASK_ID [options]
  Exchanges your identity for a credential and prints the token alone on stdout (with --json:
  the broker's answer; with --wait 0, the pending request). A high-risk scope waits for
  approval, with progress on stderr; still pending when the wait ends: exit 75.
  --scope SCOPE            a scope (repeat it, or separate scopes by spaces or commas)
  --audience AUD           the resource server the token is for
  --task TASK_ID           the task, as recorded with the grant
  --ttl DURATION           requested lifetime (5m, 1h; a bare number is seconds), clamped by policy
  --justification TEXT     why; required for --break-glass
  --break-glass            emergency access: issued at once, loudly, reviewed afterwards
  --object TYPE=ID         an object the task acts on, as an RFC 9396 authorization_details
                           entry {type, identifier} (repeat it); a scope that is a step of a
                           duty needs its object named (--object model=fraud-v1)
  --authorization-details JSON|@FILE
                           the authorization_details array itself, for entries with actions,
                           locations, datatypes or privileges (added to any --object)
  --wait DURATION          how long to wait for approval (default 15m; 0: do not wait)
  --request-id-file FILE   also write the request id to FILE (mode 0600; a symbolic link
                           there is refused, not followed), for a later jit collect or
                           jit complete in another step
  --actor-token FILE|-     act for your identity as an agent: its own identity token (a file,
                           - for stdin, or env JIT_ACTOR_TOKEN); the exchange goes to
                           /oauth2/token, where a delegation rule must allow it (the token is
                           yours, narrowed, and names the agent in act)
${DPOP_HELP}
  A wait asks the broker every 2s (env JIT_POLL_INTERVAL sets another interval).`;

export const collectHelp = `jit collect REQUEST_ID [--wait DURATION] [--actor-token FILE|-] [--dpop]
  Waits for an approved request (default 15m; 0: look once) and prints its token (with --json:
  the broker's answer). A token is given once: collecting it again is refused.
  --actor-token FILE|-     a request an agent made for you (jit request --actor-token) is
                           collected with the agent's token again (a file, - for stdin, or
                           env JIT_ACTOR_TOKEN), at /oauth2/token
${DPOP_HELP}
                           (a request made with --dpop is collected with --dpop)`;

/** How often a wait asks the broker; env JIT_POLL_INTERVAL changes it. */
const DEFAULT_POLL = '2s';

export async function request(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, {
    ...callerOptions,
    scope: { type: 'string', multiple: true, default: [] },
    audience: { type: 'string' },
    task: { type: 'string' },
    ttl: { type: 'string' },
    justification: { type: 'string' },
    'break-glass': { type: 'boolean', default: false },
    object: { type: 'string', multiple: true, default: [] },
    'authorization-details': { type: 'string' },
    wait: { type: 'string', default: '15m' },
    'request-id-file': { type: 'string' },
    'actor-token': { type: 'string' },
    ...dpopOptions,
  });
  const scopes = values.scope.flatMap((scope) => scope.split(/[\s,]+/)).filter(Boolean);
  if (scopes.length === 0) throw usage('at least one --scope is required');
  if (!values.audience) throw usage('--audience is required');
  if (!values.task) throw usage('--task is required');
  const ttl = values.ttl === undefined ? undefined : parseTtlSeconds(values.ttl);
  const details = authorizationDetails(values.object, values['authorization-details']);
  const wait = parseDuration(values.wait, '--wait');
  const poll = pollInterval(io);

  const client = withDpop(connect(io, values), io, values.dpop);
  const actorSource = values['actor-token'] ?? (io.env.JIT_ACTOR_TOKEN ? 'env' : undefined);
  if (actorSource !== undefined) {
    return delegate(io, client, actorSource, {
      scope: scopes.join(' '),
      audience: values.audience,
      task_id: values.task,
      ...(ttl !== undefined ? { ttl_seconds: String(ttl) } : {}),
      ...(values.justification !== undefined ? { justification: values.justification } : {}),
      ...(values['break-glass'] ? { break_glass: 'true' } : {}),
      ...(details.length > 0 ? { authorization_details: JSON.stringify(details) } : {}),
    }, { waitMs: wait, pollMs: poll, json: values.json, requestIdFile: values['request-id-file'], collectHint: actorHint(actorSource) });
  }
  const { status, body } = await client.post<Record<string, unknown>>('/v1/credentials', {
    task_id: values.task,
    scopes,
    audience: values.audience,
    ...(ttl !== undefined ? { ttl_seconds: ttl } : {}),
    ...(values.justification !== undefined ? { justification: values.justification } : {}),
    break_glass: values['break-glass'],
    ...(details.length > 0 ? { authorization_details: details } : {}),
  });
  const id = String(body.request_id);
  if (values['request-id-file'] !== undefined) writeRequestId(values['request-id-file'], id);
  if (status === 201) return printIssued(io, body as unknown as IssuedView, values.json);

  io.stderr(`request ${shown(id)} needs ${shown(String(body.approvals_required))} approval(s); digest ${shown(String(body.digest))}\n`);
  io.stderr(`an approver runs: jit approve ${shown(id)} --reason "..."\n`);
  if (wait === 0) {
    if (values.json) printJson(io, body);
    io.stderr(`not waiting; collect the token later with: jit collect ${shown(id)}\n`);
    return EXIT.pending;
  }
  return waitAndCollect(io, client, id, { waitMs: wait, pollMs: poll, json: values.json });
}

const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';

/**
 * An agent acting for the caller's identity: the exchange at /oauth2/token with the agent's own
 * token as `actor_token` (delegation happens there only). The agent's token is read afresh for
 * each call, so a wait outlives a short-lived one; a request that waits is polled as the subject
 * and collected with both tokens again.
 */
async function delegate(
  io: CliIo,
  client: BrokerClient,
  source: string,
  fields: Record<string, string>,
  options: { waitMs: number; pollMs: number; json: boolean; requestIdFile: string | undefined; collectHint: string },
): Promise<number> {
  const { body } = await client.exchange<ExchangedView>({ ...fields, ...actorFields(io, source) });
  if (body.request_id !== undefined && options.requestIdFile !== undefined) writeRequestId(options.requestIdFile, body.request_id);
  if (body.access_token !== undefined) return printIssued(io, body as IssuedView, options.json);
  const id = String(body.request_id);
  io.stderr(`request ${shown(id)} needs approval; an approver runs: jit approve ${shown(id)} --reason "..."
`);
  if (options.waitMs === 0) {
    if (options.json) printJson(io, body);
    io.stderr(`not waiting; collect the token later with: jit collect ${shown(id)}${options.collectHint}\n`);
    return EXIT.pending;
  }
  return waitAndCollect(io, client, id, { ...options, collect: collectingAsAgent(io, client, id, source) });
}

/** The agent's part of an exchange, its token read afresh (a wait may outlive a short-lived one). */
const actorFields = (io: CliIo, source: string) => ({ actor_token: readActorToken(io, source), actor_token_type: JWT_TOKEN_TYPE });

/** A delegated request's token is collected at /oauth2/token, with the subject's and the agent's tokens again. */
const collectingAsAgent = (io: CliIo, client: BrokerClient, id: string, source: string) => async () =>
  (await client.exchange<IssuedView>({ request_id: id, ...actorFields(io, source) })).body;

/** How to name the agent's token again in a later jit collect. */
const actorHint = (source: string | undefined): string =>
  source === undefined ? '' : source === 'env' ? ' (with JIT_ACTOR_TOKEN set)' : source === '-' ? ' --actor-token -' : ` --actor-token ${shown(source)}`;

type ExchangedView = Partial<IssuedView> & { request_id?: string };

/** The agent's identity token: a file, `-` for stdin, or env JIT_ACTOR_TOKEN (`env`). */
function readActorToken(io: CliIo, source: string): string {
  const named = source === 'env' ? 'JIT_ACTOR_TOKEN' : source === '-' ? 'stdin' : argumentInMessage(source);
  let text: string;
  try {
    text = source === 'env' ? (io.env.JIT_ACTOR_TOKEN ?? '') : source === '-' ? io.readStdin() : readFileSync(source, 'utf8');
  } catch (error) {
    throw new CliError(`cannot read the actor token from ${named} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const token = text.trim();
  if (!/^[\w-]+\.[\w-]+\.[\w-]+$/.test(token)) throw usage(`the actor token from ${named} is not a JWT`);
  return token;
}

export async function collect(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, { ...callerOptions, wait: { type: 'string', default: '15m' }, 'actor-token': { type: 'string' }, ...dpopOptions }, ['REQUEST_ID']);
  const id = requestIdArgument(io, positionals[0], false);
  const wait = parseDuration(values.wait, '--wait');
  const client = withDpop(connect(io, values), io, values.dpop);
  const actorSource = values['actor-token'] ?? (io.env.JIT_ACTOR_TOKEN ? 'env' : undefined);
  return waitAndCollect(io, client, id, {
    waitMs: wait,
    pollMs: pollInterval(io),
    json: values.json,
    collectHint: actorHint(actorSource),
    ...(actorSource !== undefined ? { collect: collectingAsAgent(io, client, id, actorSource) } : {}),
  });
}

/** `--object TYPE=ID` entries, then those of `--authorization-details` (JSON, or @FILE holding it). */
function authorizationDetails(objects: string[], json: string | undefined): unknown[] {
  const named = objects.map((object) => {
    const split = object.indexOf('=');
    if (split <= 0 || split === object.length - 1) throw usage(`--object takes TYPE=IDENTIFIER, such as model=fraud-v1 (got ${shown(argumentInMessage(object))})`);
    return { type: object.slice(0, split), identifier: object.slice(split + 1) };
  });
  if (json === undefined) return named;
  let text = json;
  if (json.startsWith('@')) {
    try {
      text = readFileSync(json.slice(1), 'utf8');
    } catch (error) {
      throw new CliError(`cannot read ${json.slice(1)} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
    }
  }
  let given: unknown;
  try {
    given = JSON.parse(text);
  } catch {
    throw usage('--authorization-details must be a JSON array of objects (or @FILE holding one)');
  }
  if (!Array.isArray(given)) throw usage('--authorization-details must be a JSON array of objects (or @FILE holding one)');
  return [...named, ...given];
}

function pollInterval(io: CliIo): number {
  const value = parseDuration(io.env.JIT_POLL_INTERVAL || DEFAULT_POLL, 'JIT_POLL_INTERVAL');
  if (value < 100) throw usage('JIT_POLL_INTERVAL must be at least 100ms');
  return value;
}

/**
 * Opened without following a symbolic link (O_NOFOLLOW), and without waiting for a reader of a FIFO
 * (O_NONBLOCK): the file often sits in a shared directory (/tmp, a runner's work dir), where another
 * user can plant either at the path, to have this step overwrite and chmod whatever file of the
 * caller's the link points to, or hang. A file of another user's is refused too: fchmod fails on
 * it before anything in it is touched.
 */
const REQUEST_ID_FILE_FLAGS = constants.O_WRONLY | constants.O_CREAT | (constants.O_NOFOLLOW ?? 0) | (constants.O_NONBLOCK ?? 0);

function writeRequestId(path: string, id: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(path, REQUEST_ID_FILE_FLAGS, 0o600);
    fchmodSync(fd, 0o600); // the mode above applies only to a file it creates
    ftruncateSync(fd);
    writeSync(fd, `${id}\n`);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new CliError(`cannot write ${path} (${code === 'ELOOP' ? 'a symbolic link: not followed' : (code ?? 'error')}); the request ${id} was made`);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Polls the request until it is approved (then collects its token), ends, or the wait runs out.
 * Progress goes to stderr: redrawn in place on a terminal; in a log, a line when the approvals
 * change and once a minute.
 */
async function waitAndCollect(
  io: CliIo,
  client: BrokerClient,
  id: string,
  options: { waitMs: number; pollMs: number; json: boolean; collectHint?: string; collect?: () => Promise<IssuedView> },
): Promise<number> {
  const path = `/v1/credentials/${encodeURIComponent(id)}`;
  const collectToken = options.collect ?? (async () => (await client.post<IssuedView>(`${path}/token`)).body);
  const started = io.now();
  const clear = () => io.interactive && io.stderr('\r\x1b[K');
  let reported: { approvals: number; at: number } | undefined;
  for (;;) {
    const view = await duringWait(id, () => client.get<RequestView>(path));
    if (view.status === 'approved') {
      clear();
      io.stderr(`request ${shown(id)} approved; collecting the token\n`);
      try {
        return printIssued(io, await duringWait(id, collectToken), options.json);
      } catch (error) {
        // Denied at collection (the running configuration no longer grants it): a refusal, with the broker's reason.
        if (error instanceof CliError && error.exitCode === EXIT.failed && (await client.get<RequestView>(path)).status === 'denied') {
          throw new CliError(error.message, EXIT.refused);
        }
        throw error;
      }
    }
    if (view.status !== 'pending_approval') {
      clear();
      if (options.json) printJson(io, view);
      return ended(io, view);
    }
    const elapsed = io.now() - started;
    if (elapsed >= options.waitMs) {
      clear();
      if (options.json) printJson(io, view);
      io.stderr(`request ${shown(id)} is still pending approval; collect the token later with: jit collect ${shown(id)}${options.collectHint ?? ''}\n`);
      return EXIT.pending;
    }
    const approvals = view.approvals.filter((a) => a.decision === 'approve').length;
    const line = `waiting for approval of ${shown(id)}: ${approvals}/${shown(String(view.approvals_required))} approvals, ${Math.round(elapsed / 1000)}s elapsed, request expires ${shown(view.expires_at)}`;
    if (io.interactive) io.stderr(`\r\x1b[K${line}`);
    else if (!reported || reported.approvals !== approvals || io.now() - reported.at >= 60_000) {
      io.stderr(`${line}\n`);
      reported = { approvals, at: io.now() };
    }
    await io.sleep(Math.min(options.pollMs, options.waitMs - elapsed));
  }
}

/** An identity that expires during a wait is the usual way a wait fails: say how to carry on. */
async function duringWait<T>(id: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (error instanceof CliError && error.exitCode === EXIT.identityExpired) {
      throw new CliError(`${error.message}; the request stays as it is: jit collect ${id} with a fresh identity`, error.exitCode);
    }
    throw error;
  }
}

/** A request that will give no token: denied (refused), expired, revoked, or already collected. */
function ended(io: CliIo, view: RequestView): number {
  const id = shown(view.request_id);
  if (view.status === 'denied') {
    const denial = view.approvals.find((a) => a.decision === 'deny');
    io.stderr(`request ${id} was denied${denial ? ` by ${shown(denial.sub)}: ${shown(denial.reason)}` : ''}; no token\n`);
    return EXIT.refused;
  }
  if (view.status === 'issued') io.stderr(`request ${id} was already collected: its token is given once\n`);
  else io.stderr(`request ${id} is ${shown(view.status)}; no token\n`);
  return EXIT.failed;
}

/** The token, alone on stdout for the next step to read: never anything else in its place. */
function printIssued(io: CliIo, issued: IssuedView, json: boolean): number {
  if (typeof issued.access_token !== 'string' || !/^[\w-]+\.[\w-]+\.[\w-]+$/.test(issued.access_token)) {
    throw new CliError('the broker answered that the token was issued, but gave no token (a JWT) with it');
  }
  if (json) printJson(io, issued);
  else io.stdout(`${issued.access_token}\n`);
  return EXIT.ok;
}
