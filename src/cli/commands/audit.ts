import { verifyStoredChain, type EventView, type IssuanceView } from '../../audit/index.js';
import { openSqliteReadOnly } from '../../store/index.js';
import { createClient } from '../client.js';
import { brokerUrl, CliError, connectionOptions, identityToken, parse, shown, usage, type CliIo } from '../io.js';

export const help = `jit audit issuances [--since T] [--until T] [--subject S] [--scope S] [--status issued|expired|revoked]
                    [--break-glass true|false] [--limit N] [--all] [--format table|ndjson|csv]
jit audit events [--since T] [--until T] [--type T] [--request-id ID] [--limit N] [--all] [--format table|ndjson]
jit audit verify [--db FILE]
  Auditors and admins. T is an ISO 8601 time. ndjson and csv stream every match.
  verify --db checks a database file offline, without the broker; exit 1 when the chain is broken.`;

const filterOptions = {
  since: { type: 'string' },
  until: { type: 'string' },
  limit: { type: 'string' },
  all: { type: 'boolean', default: false },
  format: { type: 'string', default: 'table' },
} as const;

export async function audit(args: string[], io: CliIo): Promise<number> {
  const [what, ...rest] = args;
  if (what === 'issuances') return issuances(rest, io);
  if (what === 'events') return events(rest, io);
  if (what === 'verify') return verify(rest, io);
  throw usage('audit needs issuances, events or verify');
}

async function issuances(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, {
    ...connectionOptions,
    ...filterOptions,
    subject: { type: 'string' },
    scope: { type: 'string' },
    status: { type: 'string' },
    'break-glass': { type: 'string' },
  });
  const query = queryString({
    since: values.since,
    until: values.until,
    subject: values.subject,
    scope: values.scope,
    status: values.status,
    break_glass: values['break-glass'],
    limit: values.limit,
  });
  return list<IssuanceView>(io, values, '/v1/audit/issuances', query, ['csv', 'ndjson'], (row) => [
    row.issued_at,
    row.status,
    row.requester.sub,
    row.scopes.join(' '),
    row.audience,
    row.task_id,
    row.approvers.map((a) => a.sub).join(',') || '-',
    row.break_glass ? 'BREAK-GLASS' : '',
  ], ['ISSUED', 'STATUS', 'SUBJECT', 'SCOPES', 'AUDIENCE', 'TASK', 'APPROVERS', '']);
}

async function events(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, { ...connectionOptions, ...filterOptions, type: { type: 'string' }, 'request-id': { type: 'string' } });
  const query = queryString({ since: values.since, until: values.until, type: values.type, request_id: values['request-id'], limit: values.limit });
  return list<EventView>(io, values, '/v1/audit/events', query, ['ndjson'], (event) => [
    String(event.seq),
    event.at,
    event.type,
    event.actor ? event.actor.sub : '(broker)',
    event.request_id ?? '-',
    JSON.stringify(event.data),
  ], ['SEQ', 'AT', 'TYPE', 'ACTOR', 'REQUEST', 'DATA']);
}

async function verify(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, { ...connectionOptions, db: { type: 'string' } });
  let verdict: { ok: boolean; events?: number; head?: string; first_bad_seq?: number };
  if (values.db) {
    let store;
    try {
      store = openSqliteReadOnly(values.db, Date.now);
    } catch (error) {
      throw new CliError(`cannot open ${values.db}: ${(error as Error).message}`);
    }
    try {
      const result = await verifyStoredChain(store.events);
      verdict = result.ok ? { ok: true, events: result.events, head: result.head } : { ok: false, first_bad_seq: result.firstBadSeq };
    } finally {
      await store.close();
    }
  } else {
    const client = createClient(io, brokerUrl(io, values), identityToken(io, values['identity-file']));
    verdict = await client.get('/v1/audit/verify');
  }
  if (values.json) io.stdout(`${JSON.stringify(verdict)}\n`);
  else if (verdict.ok) io.stdout(`ok: ${verdict.events} events, head ${verdict.head}\n`);
  else io.stdout(`BROKEN: the chain fails at seq ${verdict.first_bad_seq}\n`);
  return verdict.ok ? 0 : 1;
}

type Values = { broker?: string | undefined; config?: string | undefined; 'identity-file'?: string | undefined; all: boolean; format: string; json: boolean };

/** Prints a listing: streamed as-is in a machine format, or as a table page by page. */
async function list<T>(
  io: CliIo,
  values: Values,
  path: string,
  query: string,
  streamed: string[],
  columns: (row: T) => string[],
  header: string[],
): Promise<number> {
  if (values.format !== 'table' && !streamed.includes(values.format)) throw usage(`--format is table or ${streamed.join(' or ')}`);
  const client = createClient(io, brokerUrl(io, values), identityToken(io, values['identity-file']));
  if (values.format !== 'table') {
    const response = await client.raw(`${path}?${query}${query ? '&' : ''}format=${values.format}`);
    const reader = response.body?.getReader();
    const decoder = new TextDecoder();
    for (let chunk = await reader?.read(); chunk && !chunk.done; chunk = await reader?.read()) io.stdout(decoder.decode(chunk.value, { stream: true }));
    return 0;
  }
  const rows: string[][] = [];
  let cursor: string | null = null;
  do {
    const page: { items: T[]; next_cursor: string | null } = await client.get(`${path}?${query}${cursor ? `${query ? '&' : ''}cursor=${cursor}` : ''}`);
    rows.push(...page.items.map(columns));
    cursor = page.next_cursor;
  } while (cursor && values.all);
  if (values.json) io.stdout(`${JSON.stringify(rows)}\n`);
  else io.stdout(table([header, ...rows]));
  if (cursor) io.stderr(`more rows: add --all, or --format ndjson for everything\n`);
  return 0;
}

function table(rows: string[][]): string {
  const cells = rows.map((row) => row.map((cell) => shown(cell.replace(/\s+/g, ' ')).slice(0, 48)));
  const widths = cells[0]?.map((_, i) => Math.max(...cells.map((row) => (row[i] ?? '').length))) ?? [];
  return cells.map((row) => row.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n') + '\n';
}

function queryString(params: Record<string, string | undefined>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value !== undefined) search.set(key, value);
  return search.toString();
}
