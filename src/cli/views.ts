import type { RequestView } from '../requests/index.js';
import { shown, shownJson } from './io.js';

/** The broker's own answers (CONTRACT section 4), typed where the broker makes them. */
export type { IssuedView, RequestView } from '../requests/index.js';

type Principal = { iss: string; sub: string };
type Actor = Principal & { act?: Actor | undefined };
type AuthorizationDetail = NonNullable<RequestView['authorization_details']>[number];

/**
 * A request as an approver reads it before deciding: every field its digest covers, since that
 * is what a decision bound to the digest approves. Each value from the request is quoted (its own
 * quotes and backslashes escaped) and each object and actor has a line of its own, so where one
 * value or entry ends is never in doubt: `["read write"]` does not read as `["read", "write"]`.
 */
export function describe(view: RequestView): string {
  const rows: [label: string, value: string][] = [
    ['request', `${view.request_id} (${view.status})`],
    ['requester', principal(view.requester)],
    ...actors(view.act),
    ...(view.initiator !== undefined ? [['started by', quoted(view.initiator)] as [string, string]] : []),
    ...(view.bound_claims !== undefined ? [['job', Object.entries(view.bound_claims).map(([name, value]) => `${quoted(name)}: ${literal(value)}`).join(', ')] as [string, string]] : []),
    ['task', quoted(view.task_id)],
    ['scopes', view.scopes.join(' ')],
    ['audience', quoted(view.audience)],
    ...(view.authorization_details ?? []).map((detail): [string, string] => ['object', object(detail)]),
    ['lifetime', `${view.ttl_seconds}s${view.break_glass ? '  BREAK-GLASS' : ''}`],
    ['justification', view.justification !== null ? quoted(view.justification) : '-'],
    ['approvals', `${view.approvals.filter((a) => a.decision === 'approve').length}/${view.approvals_required}`],
    ['expires', view.expires_at],
    ['digest', view.digest],
  ];
  return rows.map(([label, value]) => `${label.padEnd(14)}${shown(value)}`).join('\n');
}

/** Text from the request between quotes, made safe for the terminal; a quote or backslash in it escaped. */
const quoted = (text: string): string => `"${shown(text.replace(/["\\]/g, '\\$&'))}"`;

/** A claim's value: text quoted, a number or boolean as itself (the digest tells `"1"` from `1`, so the reader must). */
const literal = (value: unknown): string => (typeof value === 'string' ? quoted(value) : shown(JSON.stringify(value) ?? String(value)));

/** The issuer, one the broker's configuration trusts, runs to the end of the line. */
const principal = (who: Principal): string => `${quoted(who.sub)}  [${who.iss}]`;

/** The `act` chain, current actor first: each actor acts for the one on the next line, the last for the requester. */
function actors(act: Actor | undefined): [string, string][] {
  const rows: [string, string][] = [];
  for (let actor = act; actor; actor = actor.act) rows.push([rows.length === 0 ? 'actor' : 'for actor', principal(actor)]);
  return rows;
}

/** One RFC 9396 entry: its type and identifier, then each list it names. */
function object(detail: AuthorizationDetail): string {
  const lists = (['actions', 'locations', 'datatypes', 'privileges'] as const).flatMap((field) =>
    detail[field] !== undefined ? [`; ${field} ${detail[field].map(quoted).join(', ')}`] : [],
  );
  return `${quoted(detail.type)} ${detail.identifier !== undefined ? quoted(detail.identifier) : 'with no identifier'}${lists.join('')}`;
}

/** The broker's objects as JSON on stdout, made safe for a terminal (`shownJson`). */
export const printJson = (io: { stdout: (text: string) => void }, value: unknown) => io.stdout(`${shownJson(value)}\n`);
