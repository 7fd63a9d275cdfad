import { NOT_SHOWING } from '../shared/invisible.js';
import { truncate } from '../shared/well-formed.js';
import type { CheckpointNotice, WebhookPayload } from './payloads.js';

/**
 * `format: slack`: the event as a Slack message (`text` plus Block Kit `blocks`), which an
 * incoming webhook accepts where it refuses the plain JSON body. Who asks for what (and which
 * agent acts for them, on which objects), for which job, why and for how long, and a button to
 * the request in the console. Never a token.
 *
 * Everything from the request is untrusted: it goes into `plain_text` objects, which Slack shows
 * literally, and the one `mrkdwn` string (the notification text) escapes `&`, `<` and `>`, so a
 * justification cannot mention `@channel` or hide a link. Characters that do not show (bidi
 * overrides, fillers, variation selectors) are shown as escapes, as the CLI shows them. Lengths stay under Slack's
 * limits: 150 characters in a header, 2,000 in a field, 3,000 in a section, 75 in a button.
 */

const HEADLINES: Record<string, string> = {
  'approval.requested': 'Approval requested',
  'request.approved': 'Request approved',
  'request.denied': 'Request denied',
  'breakglass.used': 'BREAK-GLASS used',
  'breakglass.review_overdue': 'Break-glass review overdue',
};

const BUTTONS: Record<string, string> = {
  'approval.requested': 'Review and decide',
  'breakglass.used': 'Review the break-glass grant',
  'breakglass.review_overdue': 'Review the break-glass grant',
};

export interface SlackMessage {
  text: string;
  blocks: Record<string, unknown>[];
}

export function slackMessage(payload: WebhookPayload): SlackMessage {
  const headline = HEADLINES[payload.event] ?? payload.event;
  const what = `${payload.scopes.join(' ')} for ${payload.audience}`;
  const who = payload.requester.sub;
  const job = jobOf(payload);
  const lifetime = duration(payload.ttl_seconds);
  const agents = actorsOf(payload.act);

  // Ten fields at most (Slack's limit): these are all there is.
  const fields: [label: string, value: string | undefined][] = [
    ['Requester', `${who} (${payload.requester.iss})`],
    ['Acting for them', agents?.map(([sub, iss], i) => `${i > 0 ? 'for ' : ''}${quoted(sub)} (${iss})`).join('\n')],
    ['Scopes', payload.scopes.join(' ')],
    ['Audience', payload.audience],
    ['Objects', payload.authorization_details?.map(object).join('\n')],
    ['Task', payload.task_id],
    ['Job', job],
    ['Lifetime', lifetime],
    ['Approvals needed', payload.approvals_required > 0 ? String(payload.approvals_required) : undefined],
    ['Decide by', payload.event === 'approval.requested' ? payload.expires_at : undefined],
  ];
  const blocks: Record<string, unknown>[] = [
    { type: 'header', text: plain(`${headline}: ${what}`, 150) },
    {
      type: 'section',
      fields: fields.filter((field): field is [string, string] => field[1] !== undefined).map(([label, value]) => plain(`${label}\n${value}`, 2000)),
    },
  ];
  if (payload.justification) blocks.push({ type: 'section', text: plain(`Why: ${payload.justification}`, 3000) });
  blocks.push({ type: 'context', elements: [plain(`request ${payload.request_id} · digest ${payload.digest}`, 2000)] });
  if (payload.url !== undefined) {
    blocks.push({
      type: 'actions',
      elements: [
        {
          type: 'button',
          action_id: 'open_console',
          text: plain(BUTTONS[payload.event] ?? 'Open in the console', 75),
          url: payload.url,
          ...(payload.event === 'approval.requested' ? { style: 'primary' } : {}),
        },
      ],
    });
  }

  const text = `${headline}: ${agents ? `${agents.map(([sub]) => sub).join(' for ')} for ` : ''}${who} asks for ${what}${job ? ` (job: ${job})` : ''}, ${lifetime}`;
  // Cut before escaping, so no `&amp;` is cut in two, and marked: what followed (the audience,
  // the lifetime) is missing, and the reader of the notification must know it.
  return { text: escapeMrkdwn(truncate(shown(text), 3000, '…')), blocks };
}

/** The job a request belongs to: who started it and the claims that tell its run apart. */
function jobOf(payload: WebhookPayload): string | undefined {
  const parts = [
    ...(payload.initiator !== undefined ? [`started by ${payload.initiator}`] : []),
    ...(payload.bound_claims !== undefined ? [JSON.stringify(payload.bound_claims)] : []),
  ];
  return parts.length > 0 ? parts.join(', ') : undefined;
}

/**
 * The `act` chain (RFC 8693), current actor first, as `[sub, iss]` pairs: an agent acting for the
 * requester is part of what is approved (the digest covers it), so the message names it.
 */
function actorsOf(act: WebhookPayload['act']): [sub: string, iss: string][] | undefined {
  const chain: [string, string][] = [];
  for (let actor = act; actor; actor = actor.act) chain.push([actor.sub, actor.iss]);
  return chain.length > 0 ? chain : undefined;
}

type AuthorizationDetail = NonNullable<WebhookPayload['authorization_details']>[number];

/** One object the request acts on (RFC 9396), on a line of its own, as the CLI writes it. */
function object(detail: AuthorizationDetail): string {
  const lists = (['actions', 'locations', 'datatypes', 'privileges'] as const).flatMap((field) =>
    detail[field] !== undefined ? [`; ${field} ${detail[field].map(quoted).join(', ')}`] : [],
  );
  return `${quoted(detail.type)} ${detail.identifier !== undefined ? quoted(detail.identifier) : 'with no identifier'}${lists.join('')}`;
}

/**
 * A value between quotes, its own quotes, backslashes and line breaks escaped: where one value or
 * entry ends is never in doubt, and no value draws a line that reads as another entry.
 */
const quoted = (text: string) => `"${text.replace(/["\\]/g, '\\$&').replace(/\n/g, '\\n').replace(/\t/g, '\\t')}"`;

const plain = (text: string, max: number) => {
  const safe = shown(text);
  return { type: 'plain_text', text: truncate(safe, max, '…'), emoji: false };
};

/**
 * Every character that does not show as the broker defines it (`NOT_SHOWING`: control and format
 * characters, default-ignorables, the blank fillers, white space), as the CLI escapes it; a space,
 * a newline and a tab stay. Control and format characters alone let a filler or an odd space pass,
 * and `deploy-7ㅤ` read as `deploy-7`.
 */
const UNSEEN = new RegExp(`(?![ \\n\\t])[${NOT_SHOWING}]`, 'gu');
const shown = (text: string) => text.replace(UNSEEN, (c) => `\\u{${(c.codePointAt(0) as number).toString(16)}}`);

/** Slack's three control characters in mrkdwn (its docs: "Escaping text"). */
const escapeMrkdwn = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function duration(seconds: number): string {
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}

/** `audit.checkpoint` as a Slack message: the head, so a copy of it lives off the broker's host. */
export function slackCheckpoint(notice: CheckpointNotice): SlackMessage {
  const text = `Audit checkpoint: the chain holds ${notice.seq} events, head ${notice.hash}.`;
  return {
    text,
    blocks: [
      { type: 'section', text: { type: 'plain_text', text } },
      { type: 'context', elements: [{ type: 'plain_text', text: `checkpoint JWS: ${notice.checkpoint.slice(0, 2_900)}` }] },
    ],
  };
}
