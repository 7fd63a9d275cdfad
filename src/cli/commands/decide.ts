import { callerOptions, connect } from '../client.js';
import type { CliIo } from '../cli-io.js';
import { CliError, EXIT, parse, shown, usage } from '../io.js';
import { readListing } from '../listing.js';
import { requestIdArgument } from '../request-id.js';
import { describe, printJson, type RequestView } from '../views.js';

export const approvalsHelp = `jit approvals
  The requests you may decide, each with its digest (with --json: the broker's request views).`;

export const showHelp = `jit show REQUEST_ID|TOKEN|-
  One request as the broker shows it to you, as JSON (by its id, or by the credential).`;

export const decideHelp = (decision: 'approve' | 'deny') => `jit ${decision} REQUEST_ID --reason TEXT [--digest HEX] [--yes]
  Shows the request and its digest on stderr, asks for confirmation on a terminal, then records
  the decision bound to that digest (with --json: the request afterwards, on stdout).
  --reason TEXT   why, recorded with the decision
  --digest HEX    the digest you reviewed earlier: nothing is decided if the request changed since
  --yes           decide without asking; required when stdin is not a terminal (a script)`;

export async function approvals(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, callerOptions);
  const { items } = await readListing<RequestView>(connect(io, values), '/v1/approvals', new URLSearchParams({ limit: '1000' }), true);
  if (values.json) printJson(io, items);
  else if (items.length === 0) io.stderr('nothing awaits your decision\n');
  else io.stdout(`${items.map(describe).join('\n\n')}\n`);
  return EXIT.ok;
}

export async function show(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, callerOptions, ['REQUEST_ID|TOKEN|-']);
  const id = requestIdArgument(io, positionals[0], true);
  printJson(io, await connect(io, values).get(`/v1/credentials/${encodeURIComponent(id)}`));
  return EXIT.ok;
}

export const approve = (args: string[], io: CliIo) => decide('approve', args, io);
export const deny = (args: string[], io: CliIo) => decide('deny', args, io);

async function decide(decision: 'approve' | 'deny', args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    ...callerOptions,
    reason: { type: 'string' },
    digest: { type: 'string' },
    yes: { type: 'boolean', default: false },
  }, ['REQUEST_ID']);
  const id = requestIdArgument(io, positionals[0], false);
  if (!values.reason) throw usage('--reason is required');
  // A script that forgot --yes must not decide by accident: nobody could have answered the question.
  if (!values.yes && !io.interactive) throw usage(`${decision} asks for confirmation and stdin is not a terminal: add --yes to decide from a script. Nothing was decided`);
  const client = connect(io, values);
  const path = `/v1/credentials/${encodeURIComponent(id)}`;

  const view = await client.get<RequestView>(path);
  io.stderr(`${describe(view)}\n`);
  if (values.digest !== undefined && values.digest !== view.digest) {
    throw new CliError('the request no longer matches the digest you reviewed; nothing was decided');
  }
  if (!values.yes && !(await io.confirm(`${decision} this request? [y/N] `))) {
    io.stderr('nothing was decided\n');
    return EXIT.failed;
  }
  const { body } = await client.post<RequestView>(`${path}/approvals`, { decision, reason: values.reason, digest: view.digest });
  if (values.json) printJson(io, body);
  else io.stderr(`recorded: ${decision}; the request is now ${shown(String(body.status))}\n`);
  return EXIT.ok;
}
