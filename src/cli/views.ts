import { shown } from './io.js';

/** The broker's request view (CONTRACT section 4, `GET /v1/credentials/{id}`), as far as the CLI reads it. */
export interface RequestView {
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
  approvals: { sub: string; decision: string; reason: string }[];
  created_at: string;
  expires_at: string;
  review?: { status: string; due_at: string; overdue: boolean };
}

/** The 201 of `POST /v1/credentials` and `/token`. */
export interface IssuedView {
  request_id: string;
  status: 'issued';
  access_token: string;
  expires_at: string;
}

/** A request as an approver reads it before deciding. */
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

export const printJson = (io: { stdout: (text: string) => void }, value: unknown) => io.stdout(`${JSON.stringify(value, null, 2)}\n`);
