import { callerOptions, connect, type CallerValues } from '../client.js';
import type { CliIo } from '../cli-io.js';
import { EXIT, parse, shown, usage, type Options } from '../io.js';
import { requestIdArgument } from '../request-id.js';
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
  const { values, positionals } = parse(args, { ...callerOptions, ...extra }, [options.acceptsToken ? 'REQUEST_ID|TOKEN|-' : 'REQUEST_ID']);
  const id = requestIdArgument(io, positionals[0], options.acceptsToken);
  const { path, body, done } = build(values, id);
  const client = connect(io, values as CallerValues);
  const response = await client.post<RequestView>(`/v1/credentials/${encodeURIComponent(id)}/${path}`, body);
  if (values.json) printJson(io, response.body);
  else io.stderr(`${done ?? `request ${shown(id)} is now ${shown(response.body.status)}`}\n`);
  return EXIT.ok;
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
