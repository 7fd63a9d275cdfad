import { callerOptions, connect } from '../client.js';
import type { CliIo } from '../cli-io.js';
import { EXIT, parse } from '../io.js';
import { printListing, query, readListing } from '../listing.js';
import type { RequestView } from '../views.js';

export const requestsHelp = `jit requests [--status STATUS] [--limit N] [--all]
  Your own requests, newest first (in CI: this job's, where the issuer binds requests to jobs).
  --status   pending_approval, approved, issued, denied, expired or revoked
  --limit N  rows per page (default 100); --all reads every page`;

export const reviewsHelp = `jit reviews [--done] [--limit N] [--all]
  Break-glass grants awaiting post-review (approvers, auditors, admins); --done: reviewed ones.`;

const pageOptions = {
  limit: { type: 'string' },
  all: { type: 'boolean', default: false },
} as const;

export async function requests(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, { ...callerOptions, ...pageOptions, status: { type: 'string' } });
  const listing = await readListing<RequestView>(connect(io, values), '/v1/credentials', query({ status: values.status, limit: values.limit }), values.all);
  printListing(io, listing, {
    json: values.json,
    empty: 'no requests',
    header: ['CREATED', 'REQUEST', 'STATUS', 'SCOPES', 'AUDIENCE', 'TASK', 'EXPIRES'],
    row: (view) => [view.created_at, view.request_id, view.status, view.scopes.join(' '), view.audience, view.task_id, view.expires_at],
  });
  return EXIT.ok;
}

export async function reviews(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, { ...callerOptions, ...pageOptions, done: { type: 'boolean', default: false } });
  const listing = await readListing<RequestView>(
    connect(io, values),
    '/v1/break-glass',
    query({ review: values.done ? 'done' : 'pending', limit: values.limit }),
    values.all,
  );
  printListing(io, listing, {
    json: values.json,
    empty: values.done ? 'no reviewed break-glass grants' : 'no break-glass grant awaits review',
    header: ['DUE', 'REQUEST', 'REQUESTER', 'SCOPES', 'TASK', 'JUSTIFICATION', ''],
    row: (view) => [
      view.review?.due_at ?? '-',
      view.request_id,
      view.requester.sub,
      view.scopes.join(' '),
      view.task_id,
      view.justification ?? '-',
      view.review?.overdue ? 'OVERDUE' : '',
    ],
  });
  return EXIT.ok;
}
