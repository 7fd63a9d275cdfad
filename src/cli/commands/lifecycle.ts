import { callerOptions, connect, type CallerValues } from '../client.js';
import type { CliIo } from '../cli-io.js';
import { claims } from '../identity.js';
import { EXIT, parse, shown, usage, type Options } from '../io.js';
import { printJson, type RequestView } from '../views.js';

export const completeHelp = `jit complete REQUEST_ID|TOKEN|-
  The task is done: the grant ends now (requester or admin). Takes the request id, or the
  credential itself (its request_id claim is read); - reads either from stdin, which keeps a
  token out of the process list.`;

export const revokeHelp = `jit revoke REQUEST_ID|TOKEN|- --reason TEXT
  Revokes a request or grant (requester or admin). Takes the id or the credential, as complete.`;

export const reviewHelp = `jit review REQUEST_ID --outcome justified|unjustified --notes TEXT
  Post-reviews a break-glass grant (an approver, not its requester), once.`;

async function post(
  io: CliIo,
  args: string[],
  extra: Options,
  build: (values: Record<string, unknown>, id: string) => { path: string; body?: unknown; done?: string },
  options: { acceptsToken: boolean },
) {
  const { values, positionals } = parse(args, { ...callerOptions, ...extra });
  if (!positionals[0]) throw usage(options.acceptsToken ? 'a request id or a token is required' : 'a request id is required');
  if (positionals.length > 1) throw usage('one request at a time');
  const id = options.acceptsToken ? requestIdOf(io, positionals[0]) : positionals[0];
  const { path, body, done } = build(values, id);
  const client = connect(io, values as CallerValues);
  const response = await client.post<RequestView>(`/v1/credentials/${encodeURIComponent(id)}/${path}`, body);
  if (values.json) printJson(io, response.body);
  else io.stderr(`${done ?? `request ${shown(id)} is now ${shown(response.body.status)}`}\n`);
  return EXIT.ok;
}

/**
 * A request id, or a broker token whose `request_id` claim names it. The token is only read
 * (decoded, not verified: the broker decides what the caller may end), and never shown.
 */
function requestIdOf(io: CliIo, argument: string): string {
  const text = (argument === '-' ? io.readStdin() : argument).trim();
  if (!text) throw usage('stdin held no request id or token');
  if (!text.includes('.')) return text;
  const requestId = claims(text)?.request_id;
  if (typeof requestId !== 'string' || !requestId) throw usage('that is neither a request id nor a broker token (no request_id claim)');
  return requestId;
}

export const complete = (args: string[], io: CliIo) => post(io, args, {}, () => ({ path: 'complete' }), { acceptsToken: true });

export const revoke = (args: string[], io: CliIo) =>
  post(
    io,
    args,
    { reason: { type: 'string' } },
    (values) => {
      if (!values.reason) throw usage('--reason is required');
      return { path: 'revoke', body: { reason: values.reason } };
    },
    { acceptsToken: true },
  );

export const review = (args: string[], io: CliIo) =>
  post(
    io,
    args,
    { outcome: { type: 'string' }, notes: { type: 'string' } },
    (values) => {
      if (values.outcome !== 'justified' && values.outcome !== 'unjustified') throw usage('--outcome is justified or unjustified');
      if (!values.notes) throw usage('--notes is required');
      return { path: 'review', body: { outcome: values.outcome, notes: values.notes }, done: `review recorded: ${values.outcome}` };
    },
    { acceptsToken: false },
  );
