import type { RequestView } from '../requests/index.js';
import { shown } from './io.js';

/** The broker's own answers (CONTRACT section 4), typed where the broker makes them. */
export type { IssuedView, RequestView } from '../requests/index.js';

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
