import { createClient } from '../client.js';
import { brokerUrl, CliError, connectionOptions, identityToken, parse, shown, usage, type CliIo } from '../io.js';

export const help = `jit approvals                         requests you may decide
jit show REQUEST_ID                   one request, as JSON
jit approve REQUEST_ID --reason TEXT [--digest HEX] [--yes]
jit deny REQUEST_ID --reason TEXT [--digest HEX] [--yes]
  Shows the request and its digest, asks for confirmation on a terminal (unless --yes), then
  records the decision bound to that digest. --digest pins the digest you reviewed earlier.`;

interface RequestView {
  request_id: string;
  status: string;
  requester: { iss: string; sub: string };
  task_id: string;
  scopes: string[];
  audience: string;
  ttl_seconds: number;
  justification: string | null;
  break_glass: boolean;
  digest: string;
  approvals_required: number;
  approvals: { sub: string; decision: string }[];
  created_at: string;
  expires_at: string;
}

export function describe(view: RequestView): string {
  const rows: [label: string, value: string][] = [
    ['request', `${view.request_id} (${view.status})`],
    ['requester', `${view.requester.sub}  [${view.requester.iss}]`],
    ['task', view.task_id],
    ['scopes', view.scopes.join(' ')],
    ['audience', view.audience],
    ['lifetime', `${view.ttl_seconds}s${view.break_glass ? '  BREAK-GLASS' : ''}`],
    ['justification', view.justification ?? '-'],
    ['approvals', `${view.approvals.filter((a) => a.decision === 'approve').length}/${view.approvals_required}`],
    ['expires', view.expires_at],
    ['digest', view.digest],
  ];
  return rows.map(([label, value]) => `${label.padEnd(14)}${shown(value)}`).join('\n');
}

export async function approvals(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, connectionOptions);
  const client = createClient(io, brokerUrl(io, values), identityToken(io, values['identity-file']));
  const { items } = await client.get<{ items: RequestView[] }>('/v1/approvals?limit=1000');
  if (values.json) {
    io.stdout(`${JSON.stringify(items, null, 2)}\n`);
  } else if (items.length === 0) {
    io.stderr('nothing awaits your decision\n');
  } else {
    io.stdout(`${items.map(describe).join('\n\n')}\n`);
  }
  return 0;
}

export async function show(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, connectionOptions);
  if (!positionals[0]) throw usage('show needs a request id');
  const client = createClient(io, brokerUrl(io, values), identityToken(io, values['identity-file']));
  io.stdout(`${JSON.stringify(await client.get(`/v1/credentials/${encodeURIComponent(positionals[0])}`), null, 2)}\n`);
  return 0;
}

export const approve = (args: string[], io: CliIo) => decide('approve', args, io);
export const deny = (args: string[], io: CliIo) => decide('deny', args, io);

async function decide(decision: 'approve' | 'deny', args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    ...connectionOptions,
    reason: { type: 'string' },
    digest: { type: 'string' },
    yes: { type: 'boolean', default: false },
  });
  const id = positionals[0];
  if (!id) throw usage(`${decision} needs a request id`);
  if (!values.reason) throw usage('--reason is required');
  const client = createClient(io, brokerUrl(io, values), identityToken(io, values['identity-file']));
  const path = `/v1/credentials/${encodeURIComponent(id)}`;

  const view = await client.get<RequestView>(path);
  io.stderr(`${describe(view)}\n`);
  if (values.digest !== undefined && values.digest !== view.digest) {
    throw new CliError('the request no longer matches the digest you reviewed; nothing was decided');
  }
  if (!values.yes && io.interactive && !(await io.confirm(`${decision} this request? [y/N] `))) {
    io.stderr('nothing was decided\n');
    return 1;
  }
  const { body } = await client.post<RequestView>(`${path}/approvals`, { decision, reason: values.reason, digest: view.digest });
  if (values.json) io.stdout(`${JSON.stringify(body, null, 2)}\n`);
  else io.stderr(`recorded: ${decision}; the request is now ${body.status}\n`);
  return 0;
}
