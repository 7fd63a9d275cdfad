import ms from 'ms';
import { createClient, type BrokerClient } from '../client.js';
import { brokerUrl, CliError, connectionOptions, identityToken, parse, usage, type CliIo } from '../io.js';

export const help = `jit request --scope SCOPE [--scope ...] --audience AUD --task TASK_ID [options]
  Exchanges your identity token for a credential and prints the token alone on stdout.
  --ttl SECONDS           requested lifetime (clamped by policy)
  --justification TEXT    why; required for --break-glass
  --break-glass           emergency access: issued at once, loudly, reviewed afterwards
  --wait DURATION         how long to wait for approval (default 15m; 0 = do not wait)
jit collect REQUEST_ID [--wait DURATION]
  Waits for an approved request and prints its token.`;

const POLL_MS = 2_000;

interface IssuedResponse {
  access_token: string;
  request_id: string;
}

export async function request(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, {
    ...connectionOptions,
    scope: { type: 'string', multiple: true, default: [] },
    audience: { type: 'string' },
    task: { type: 'string' },
    ttl: { type: 'string' },
    justification: { type: 'string' },
    'break-glass': { type: 'boolean', default: false },
    wait: { type: 'string', default: '15m' },
  });
  const scopes = values.scope.flatMap((scope) => scope.split(/[\s,]+/)).filter(Boolean);
  if (scopes.length === 0) throw usage('at least one --scope is required');
  if (!values.audience) throw usage('--audience is required');
  if (!values.task) throw usage('--task is required');
  const ttl = values.ttl === undefined ? undefined : Number(values.ttl);
  if (ttl !== undefined && !(Number.isInteger(ttl) && ttl > 0)) throw usage('--ttl is a whole number of seconds');

  const client = createClient(io, brokerUrl(io, values), identityToken(io, values['identity-file']));
  const { status, body } = await client.post<Record<string, unknown>>('/v1/credentials', {
    task_id: values.task,
    scopes,
    audience: values.audience,
    ...(ttl !== undefined ? { ttl_seconds: ttl } : {}),
    ...(values.justification !== undefined ? { justification: values.justification } : {}),
    break_glass: values['break-glass'],
  });
  if (status === 201) return printIssued(io, body as unknown as IssuedResponse, values.json);

  const id = body.request_id as string;
  io.stderr(`request ${id} needs ${String(body.approvals_required)} approval(s); digest ${String(body.digest)}\n`);
  io.stderr(`an approver runs: jit approve ${id} --reason "..."\n`);
  const issued = await waitAndCollect(io, client, id, waitMs(values.wait));
  return printIssued(io, issued, values.json);
}

export async function collect(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, { ...connectionOptions, wait: { type: 'string', default: '15m' } });
  const id = positionals[0];
  if (!id) throw usage('collect needs a request id');
  const client = createClient(io, brokerUrl(io, values), identityToken(io, values['identity-file']));
  return printIssued(io, await waitAndCollect(io, client, id, waitMs(values.wait)), values.json);
}

function waitMs(text: string): number {
  if (text === '0') return 0;
  const value = ms(text as ms.StringValue);
  if (!Number.isFinite(value) || value < 0) throw usage(`--wait ${text} is not a duration such as 15m`);
  return value;
}

/** Polls the request until it is approved (then collects its token), ends, or the wait runs out. */
async function waitAndCollect(io: CliIo, client: BrokerClient, id: string, limitMs: number): Promise<IssuedResponse> {
  const started = Date.now();
  const clear = () => io.interactive && io.stderr('\r\x1b[K');
  for (;;) {
    const view = await client.get<{ status: string; approvals: unknown[]; approvals_required: number; expires_at: string }>(
      `/v1/credentials/${encodeURIComponent(id)}`,
    );
    if (view.status === 'approved') {
      clear();
      io.stderr(`request ${id} approved; collecting the token\n`);
      return (await client.post<IssuedResponse>(`/v1/credentials/${encodeURIComponent(id)}/token`)).body;
    }
    if (view.status !== 'pending_approval') {
      clear();
      throw new CliError(`request ${id} is ${view.status}; no token`);
    }
    const elapsed = Date.now() - started;
    if (elapsed >= limitMs) {
      clear();
      throw new CliError(`request ${id} is still pending approval; collect it later with: jit collect ${id}`, 75);
    }
    const line = `waiting for approval of ${id}: ${view.approvals.length}/${view.approvals_required} approvals, ${Math.round(elapsed / 1000)}s elapsed, request expires ${view.expires_at}`;
    io.stderr(io.interactive ? `\r\x1b[K${line}` : `${line}\n`);
    await io.sleep(Math.min(POLL_MS, limitMs - elapsed));
  }
}

function printIssued(io: CliIo, issued: IssuedResponse, json: boolean): number {
  io.stdout(json ? `${JSON.stringify(issued, null, 2)}\n` : `${issued.access_token}\n`);
  return 0;
}
