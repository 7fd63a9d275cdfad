import { createClient } from '../client.js';
import { brokerUrl, connectionOptions, identityToken, parse, usage, type CliIo } from '../io.js';

export const help = `jit complete REQUEST_ID                the task is done: revoke its grant
jit revoke REQUEST_ID --reason TEXT   revoke a request or grant (requester or admin)
jit review REQUEST_ID --outcome justified|unjustified --notes TEXT
                                      post-review a break-glass grant (an approver, not its requester)`;

async function post(
  io: CliIo,
  args: string[],
  extra: Parameters<typeof parse>[1],
  build: (values: Record<string, unknown>, id: string) => { path: string; body?: unknown; done?: string },
) {
  const { values, positionals } = parse(args, { ...connectionOptions, ...extra });
  const id = positionals[0];
  if (!id) throw usage('a request id is required');
  const client = createClient(io, brokerUrl(io, values as never), identityToken(io, values['identity-file'] as string | undefined));
  const { path, body, done } = build(values, id);
  const response = await client.post<{ status: string }>(`/v1/credentials/${encodeURIComponent(id)}/${path}`, body);
  if (values.json) io.stdout(`${JSON.stringify(response.body, null, 2)}\n`);
  else io.stderr(`${done ?? `request ${id} is now ${response.body.status}`}\n`);
  return 0;
}

export const complete = (args: string[], io: CliIo) => post(io, args, {}, () => ({ path: 'complete' }));

export const revoke = (args: string[], io: CliIo) =>
  post(io, args, { reason: { type: 'string' } }, (values) => {
    if (!values.reason) throw usage('--reason is required');
    return { path: 'revoke', body: { reason: values.reason } };
  });

export const review = (args: string[], io: CliIo) =>
  post(io, args, { outcome: { type: 'string' }, notes: { type: 'string' } }, (values) => {
    if (values.outcome !== 'justified' && values.outcome !== 'unjustified') throw usage('--outcome is justified or unjustified');
    if (!values.notes) throw usage('--notes is required');
    return { path: 'review', body: { outcome: values.outcome, notes: values.notes }, done: `review recorded: ${values.outcome}` };
  });
