import { ApiError, call, get, post, SignedOut, type Issuance, type Page, type RequestView } from './api.js';
import { fromNow, h, lifetime, show, time, untrusted, type Child } from './dom.js';

/**
 * The console's views. Each draws into `root` from what the API answers; every value that came
 * from a request goes through `untrusted`, which shows it as inert text.
 */

export interface ViewContext {
  root: HTMLElement;
  /** Moves to another console path without reloading (the ID token lives in this page). */
  go(path: string): void;
  /** The sign-in ended (expired, or refused): the page asks the person to sign in again, saying why. */
  signedOut(why: string): void;
}

const enc = encodeURIComponent;

function problem(error: unknown): HTMLElement {
  const text = error instanceof Error ? error.message : String(error);
  return h('p', { class: 'problem', role: 'alert' }, untrusted(text));
}

/** An action that failed: said where it happened; one whose sign-in ended takes the page to sign in again. */
function failed(ctx: ViewContext, where: HTMLElement, error: unknown): void {
  if (error instanceof SignedOut) ctx.signedOut(error.message);
  else show(where, problem(error));
}

const status = (view: { status: string }) => h('span', { class: `status ${view.status}`, 'data-testid': 'status' }, view.status.replace('_', ' '));

/**
 * One value of a list, boxed: where one value ends and the next begins shows, so `["read write"]`
 * never reads as `["read", "write"]`, nor one object whose identifier holds "; model x" as two.
 */
const chip = (value: unknown) => h('code', { class: 'chip' }, untrusted(value));

/** An identity as records name it: its `sub`, and its issuer beside it (the same `sub` at another issuer is someone else). */
const identity = (who: { iss: string; sub: string }, sub: Child = untrusted(who.sub)): Child => [sub, ' ', h('span', { class: 'muted' }, '(', untrusted(who.iss), ')')];

/** How many rows a listing page brings: the first, and each "Show more". */
const PAGE = 100;

/**
 * A listing's rows from its first page, drawn by `row` into `into`, and below them a "Show more"
 * button while the listing has more: each press fetches the next page (the listing's own cursor)
 * and adds its rows, so nothing past the first page is out of reach.
 */
async function paged<T>(ctx: ViewContext, path: string, into: HTMLElement, row: (item: T) => HTMLElement): Promise<{ count: number; more: HTMLElement }> {
  const more = h('p', {});
  const load = async (cursor?: string) => {
    const page = await get<Page<T>>(`${path}${path.includes('?') ? '&' : '?'}limit=${PAGE}${cursor ? `&cursor=${enc(cursor)}` : ''}`);
    into.append(...page.items.map(row));
    const next = page.next_cursor;
    more.replaceChildren(...(next ? [h('button', { type: 'button', 'data-testid': 'more', onclick: () => void load(next).catch((error: unknown) => failed(ctx, more, error)) }, 'Show more')] : []));
    return page.items.length;
  };
  return { count: await load(), more };
}

/** A list whose entries read apart, one to a line. */
const entries = (items: Child[], testid: string) => h('ul', { class: 'entries' }, items.map((item) => h('li', { 'data-testid': testid }, item)));

function jobOf(view: RequestView): Child {
  if (!view.bound_claims) return null;
  return entries(Object.entries(view.bound_claims).map(([name, value]) => [chip(name), ' = ', chip(value)]), 'bound-claim');
}

/** Who acts for the requester, current actor first, each for the next: a sub and its issuer. */
function actorsOf(view: Pick<RequestView, 'act'>): Child {
  const chain: Child[] = [];
  for (let actor = view.act; actor; actor = actor.act) {
    chain.push([chain.length > 0 ? 'for ' : '', identity(actor, chip(actor.sub))]);
  }
  return chain.length > 0 ? entries(chain, 'actor') : null;
}

/** The objects the request acts on (RFC 9396), each its type, identifier and what else it names. */
function objectsOf(view: Pick<RequestView, 'authorization_details'>): Child {
  if (!view.authorization_details) return null;
  return entries(
    view.authorization_details.map((detail) => [
      chip(detail.type),
      ' ',
      detail.identifier !== undefined ? chip(detail.identifier) : h('span', { class: 'muted' }, '(no identifier)'),
      (['actions', 'locations', 'datatypes', 'privileges'] as const).map((field) => {
        const values = detail[field];
        return values ? [' ', h('span', { class: 'muted' }, `${field}:`), values.map((value) => [' ', chip(value)])] : null;
      }),
    ]),
    'object',
  );
}

const approvalsCount = (view: RequestView) =>
  `${view.approvals.filter((a) => a.decision === 'approve').length} of ${view.approvals_required}`;

/** The fields an approver decides on, in the order they read them. */
function fields(view: RequestView, detail: boolean): HTMLElement {
  const rows: [string, Child, string?][] = [
    ['Requester', identity(view.requester), 'requester'],
    ['Acting for them', actorsOf(view), 'act'],
    ['Started by', view.initiator !== undefined ? chip(view.initiator) : null, 'initiator'],
    ['Job', jobOf(view), 'bound-claims'],
    ['Scopes', untrusted(view.scopes.join(' ')), 'scopes'],
    ['Audience', untrusted(view.audience), 'audience'],
    ['Objects', objectsOf(view), 'objects'],
    ['Lifetime', [lifetime(view.ttl_seconds), view.break_glass ? h('span', { class: 'breakglass' }, '  BREAK-GLASS') : null]],
    ['Task', untrusted(view.task_id), 'task'],
    ['Justification', view.justification ? untrusted(view.justification) : h('span', { class: 'muted' }, 'none given'), 'justification'],
    ['Approvals', view.approvals_required > 0 ? approvalsCount(view) : null, 'approvals'],
    [view.status === 'pending_approval' ? 'Time left' : 'Until', [fromNow(view.expires_at), ' (', time(view.expires_at), ')'], 'expires'],
  ];
  if (detail) {
    rows.push(['Status', status(view)], ['Requested', time(view.created_at)], ['Digest', h('code', { class: 'digest', 'data-testid': 'digest' }, view.digest)]);
    if (view.review) {
      rows.push([
        'Review',
        view.review.status === 'pending'
          ? [`due ${fromNow(view.review.due_at)}`, view.review.overdue ? h('span', { class: 'breakglass' }, ' OVERDUE') : null]
          : [untrusted(view.review.outcome ?? ''), ' by ', view.review.reviewer ? identity(view.review.reviewer) : '', ': ', untrusted(view.review.notes ?? '')],
      ]);
    }
  }
  return h(
    'dl',
    { class: 'fields' },
    rows.filter(([, value]) => value !== null).map(([label, value, id]) => [h('dt', {}, label), h('dd', id ? { 'data-testid': id } : {}, value)]),
  );
}

function card(view: RequestView, ctx: ViewContext): HTMLElement {
  const link = `/console/requests/${enc(view.request_id)}`;
  return h(
    'article',
    { class: 'card', 'data-request-id': view.request_id, 'data-testid': 'request' },
    h('h3', {}, untrusted(view.scopes.join(' ')), ' for ', untrusted(view.audience), ' ', status(view)),
    fields(view, false),
    h('p', {}, h('a', { href: link, onclick: follow(ctx, link) }, view.status === 'pending_approval' ? 'Review and decide' : 'Open')),
  );
}

/** A click on an internal link stays in this page. */
export const follow = (ctx: ViewContext, path: string) => (event: MouseEvent) => {
  if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  event.preventDefault();
  ctx.go(path);
};

/** `/console`: what awaits this person's decision, and break-glass grants awaiting review. */
export async function decideView(ctx: ViewContext): Promise<void> {
  const cards = (view: RequestView) => card(view, ctx);
  const [pendingCards, reviewCards] = [h('div', {}), h('div', {})];
  const [pending, reviews] = await Promise.all([
    paged(ctx, '/v1/approvals', pendingCards, cards),
    paged(ctx, '/v1/break-glass?review=pending', reviewCards, cards).catch((error: unknown) => {
      if (error instanceof ApiError && error.status === 403) return null; // not an approver nor an auditor
      throw error;
    }),
  ]);
  show(
    ctx.root,
    h('h1', {}, 'Awaiting your decision'),
    pending.count === 0 ? h('p', { class: 'muted', 'data-testid': 'nothing-pending' }, 'Nothing awaits your decision.') : [pendingCards, pending.more],
    reviews ? [h('h2', {}, 'Break-glass grants awaiting review'), reviews.count === 0 ? h('p', { class: 'muted' }, 'None.') : [reviewCards, reviews.more]] : null,
  );
}

/** `/console/requests/{id}`: one request, and the decision or review made on it. */
export async function requestView(ctx: ViewContext, id: string, notice?: string): Promise<void> {
  const view = await get<RequestView>(`/v1/credentials/${enc(id)}`);
  const outcome = h('div', { 'data-testid': 'outcome' }, notice ? h('p', { class: 'notice', role: 'status' }, notice) : null);
  show(
    ctx.root,
    h('h1', {}, 'Request ', h('code', {}, view.request_id)),
    h('section', { class: 'card' }, fields(view, true), approvalsList(view)),
    outcome,
    view.status === 'pending_approval' ? decisionForm(ctx, view, outcome) : null,
    view.break_glass && view.review?.status === 'pending' ? reviewForm(ctx, view, outcome) : null,
  );
}

function approvalsList(view: RequestView): Child {
  if (view.approvals.length === 0) return null;
  return [
    h('h3', {}, 'Decisions'),
    h('ul', {}, view.approvals.map((a) => h('li', {}, h('strong', {}, a.decision), ' by ', identity(a), ' ', time(a.at), ': ', untrusted(a.reason)))),
  ];
}

/**
 * Approve or deny, bound to the digest of the request as shown here: if the request the broker
 * holds is not the one on screen, the broker refuses the decision (409) and the page says so.
 */
function decisionForm(ctx: ViewContext, view: RequestView, outcome: HTMLElement): HTMLElement {
  const reason = h('textarea', { id: 'reason', name: 'reason', required: true, placeholder: 'Why you approve or deny it' });
  const buttons = [
    h('button', { type: 'submit', class: 'approve', value: 'approve', 'data-testid': 'approve' }, 'Approve'),
    h('button', { type: 'submit', class: 'deny', value: 'deny', 'data-testid': 'deny' }, 'Deny'),
  ];
  return h(
    'form',
    {
      'aria-label': 'Decision',
      async onsubmit(event) {
        event.preventDefault();
        // Only a press of Approve or Deny decides: a submit naming neither (a script's
        // requestSubmit()) decides nothing, rather than approve by default.
        const decision = (event.submitter as HTMLButtonElement | null)?.value;
        if (decision !== 'approve' && decision !== 'deny') return;
        buttons.forEach((button) => (button.disabled = true));
        try {
          const after = await post<RequestView>(`/v1/credentials/${enc(view.request_id)}/approvals`, { decision, reason: reason.value, digest: view.digest });
          await requestView(ctx, view.request_id, decision === 'approve' ? `You approved it. The request is ${after.status.replace('_', ' ')}.` : 'You denied it.');
        } catch (error) {
          failed(ctx, outcome, error);
          buttons.forEach((button) => (button.disabled = false));
        }
      },
    },
    h('label', { for: 'reason' }, 'Reason'),
    reason,
    h('p', { class: 'muted' }, 'Your decision is bound to digest ', h('code', { class: 'digest' }, view.digest), '.'),
    h('div', { class: 'actions' }, buttons),
  );
}

function reviewForm(ctx: ViewContext, view: RequestView, outcome: HTMLElement): HTMLElement {
  const verdict = h('select', { id: 'outcome', name: 'outcome' }, h('option', { value: 'justified' }, 'justified'), h('option', { value: 'unjustified' }, 'unjustified'));
  const notes = h('textarea', { id: 'notes', name: 'notes', required: true, placeholder: 'What you checked' });
  const submit = h('button', { type: 'submit', class: 'primary', 'data-testid': 'review' }, 'Record the review');
  return h(
    'form',
    {
      'aria-label': 'Break-glass review',
      async onsubmit(event) {
        event.preventDefault();
        submit.disabled = true;
        try {
          await post(`/v1/credentials/${enc(view.request_id)}/review`, { outcome: verdict.value, notes: notes.value });
          await requestView(ctx, view.request_id, 'Your review is recorded.');
        } catch (error) {
          failed(ctx, outcome, error);
          submit.disabled = false;
        }
      },
    },
    h('h2', {}, 'Post-review of this break-glass grant'),
    h('label', { for: 'outcome' }, 'Outcome'),
    verdict,
    h('label', { for: 'notes' }, 'Notes'),
    notes,
    h('div', { class: 'actions' }, submit),
  );
}

/** `/console/mine`: the person's own requests. */
export async function mineView(ctx: ViewContext): Promise<void> {
  const rows = h('tbody', {});
  const mine = await paged(ctx, '/v1/credentials', rows, (view: RequestView) => {
    const link = `/console/requests/${enc(view.request_id)}`;
    return h(
      'tr',
      { 'data-request-id': view.request_id },
      h('td', {}, h('a', { href: link, onclick: follow(ctx, link) }, time(view.created_at))),
      h('td', {}, untrusted(view.task_id)),
      h('td', {}, untrusted(view.scopes.join(' '))),
      h('td', {}, untrusted(view.audience)),
      h('td', {}, status(view)),
      h('td', {}, fromNow(view.expires_at)),
    );
  });
  show(
    ctx.root,
    h('h1', {}, 'Your requests'),
    mine.count === 0
      ? h('p', { class: 'muted' }, 'You have made no requests.')
      : [h('table', {}, h('thead', {}, h('tr', {}, ['Requested', 'Task', 'Scopes', 'Audience', 'Status', 'Until'].map((label) => h('th', {}, label)))), rows), mine.more],
  );
}

/** `/console/break-glass`: grants awaiting review and those reviewed. */
export async function breakGlassView(ctx: ViewContext): Promise<void> {
  const cards = (view: RequestView) => card(view, ctx);
  const [pendingCards, doneCards] = [h('div', {}), h('div', {})];
  const [pending, done] = await Promise.all([paged(ctx, '/v1/break-glass?review=pending', pendingCards, cards), paged(ctx, '/v1/break-glass?review=done', doneCards, cards)]);
  show(
    ctx.root,
    h('h1', {}, 'Break-glass grants'),
    h('h2', {}, 'Awaiting review'),
    pending.count === 0 ? h('p', { class: 'muted' }, 'None.') : [pendingCards, pending.more],
    h('h2', {}, 'Reviewed'),
    done.count === 0 ? h('p', { class: 'muted' }, 'None.') : [doneCards, done.more],
  );
}

const FILTERS = ['since', 'until', 'subject', 'scope', 'status', 'break_glass', 'type', 'identifier', 'actor'] as const;

/** `/console/audit`: the chain's verify status, issuances with filters, and the exports. */
export async function auditView(ctx: ViewContext): Promise<void> {
  const verify = await get<{ ok: boolean; events?: number; head?: string; first_bad_seq?: number; reason?: string }>('/v1/audit/verify');
  const inputs = Object.fromEntries(
    FILTERS.map((name) => [
      name,
      name === 'status'
        ? h('select', { name }, ['', 'issued', 'expired', 'revoked'].map((value) => h('option', { value }, value || 'any')))
        : name === 'break_glass'
          ? h('select', { name }, ['', 'true', 'false'].map((value) => h('option', { value }, value || 'any')))
          : h('input', { name, placeholder: name === 'since' || name === 'until' ? '2026-01-31T00:00:00Z' : '' }),
    ]),
  ) as Record<(typeof FILTERS)[number], HTMLInputElement | HTMLSelectElement>;
  const results = h('div', { 'data-testid': 'issuances' });
  const query = () => {
    const params = new URLSearchParams();
    for (const name of FILTERS) if (inputs[name].value.trim()) params.set(name, inputs[name].value.trim());
    return params;
  };

  async function load(cursor?: string) {
    const params = query();
    params.set('limit', '50');
    if (cursor) params.set('cursor', cursor);
    try {
      const page = await get<Page<Issuance>>(`/v1/audit/issuances?${params}`);
      const more = page.next_cursor;
      show(
        results,
        h(
          'table',
          {},
          h('thead', {}, h('tr', {}, ['Issued', 'Requester', 'Acting for them', 'Task', 'Scopes', 'Audience', 'Objects', 'Status', 'Approvers'].map((label) => h('th', {}, label)))),
          h(
            'tbody',
            {},
            page.items.map((row) =>
              h(
                'tr',
                {},
                h('td', {}, time(row.issued_at)),
                h('td', {}, identity(row.requester)),
                h('td', {}, actorsOf(row)),
                h('td', {}, untrusted(row.task_id)),
                h('td', {}, untrusted(row.scopes.join(' '))),
                h('td', {}, untrusted(row.audience)),
                h('td', {}, objectsOf(row)),
                h('td', {}, row.status, row.break_glass ? h('span', { class: 'breakglass' }, ' break-glass') : null),
                h('td', {}, (row.approvers ?? []).map((a, i) => [i > 0 ? ', ' : '', identity(a)])),
              ),
            ),
          ),
        ),
        page.items.length === 0 ? h('p', { class: 'muted' }, 'No issuance matches.') : null,
        more ? h('p', {}, h('button', { type: 'button', onclick: () => void load(more) }, 'Next page')) : null,
      );
    } catch (error) {
      failed(ctx, results, error);
    }
  }

  /** The export as a file: fetched with the ID token in a header, then saved from memory. */
  async function download(format: 'csv' | 'ndjson') {
    const params = query();
    params.set('format', format);
    try {
      const blob = await (await call('GET', `/v1/audit/issuances?${params}`)).blob();
      const url = URL.createObjectURL(blob);
      const link = h('a', {});
      link.setAttribute('href', url);
      link.setAttribute('download', `issuances.${format}`);
      link.click();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (error) {
      failed(ctx, results, error);
    }
  }

  show(
    ctx.root,
    h('h1', {}, 'Audit'),
    h(
      'p',
      { class: verify.ok ? 'notice' : 'problem', 'data-testid': 'verify' },
      verify.ok
        ? `The audit chain verifies: ${verify.events ?? 0} events, head ${verify.head?.slice(0, 16) ?? ''}…`
        : `The audit chain is BROKEN${verify.first_bad_seq !== undefined ? ` at event ${verify.first_bad_seq}` : ''}${verify.reason ? ` (${verify.reason})` : ''}.`,
    ),
    h('h2', {}, 'Issuances'),
    h(
      'form',
      {
        class: 'filters',
        'aria-label': 'Filters',
        onsubmit(event) {
          event.preventDefault();
          void load();
        },
      },
      FILTERS.map((name) => h('label', {}, name.replace('_', '-'), inputs[name])),
      h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Filter')),
    ),
    h(
      'p',
      { class: 'actions' },
      h('button', { type: 'button', onclick: () => void download('csv') }, 'Export CSV'),
      h('button', { type: 'button', onclick: () => void download('ndjson') }, 'Export NDJSON'),
    ),
    results,
  );
  await load();
}
