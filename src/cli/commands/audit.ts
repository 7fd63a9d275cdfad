import { verifyStoredChain, type EventView, type IssuanceView } from '../../audit/index.js';
import { openSqliteReadOnly } from '../../store/index.js';
import { callerOptions, connect, createClient, type CallerValues } from '../client.js';
import { parseTime } from '../duration.js';
import { brokerUrl, CliError, connectionOptions, EXIT, identityToken, parse, usage, type CliIo } from '../io.js';
import { printListing, query, readListing } from '../listing.js';

export const help = `jit audit issuances [--since T] [--until T] [--subject S] [--scope S] [--status issued|expired|revoked]
                    [--break-glass true|false] [--limit N] [--all] [--format table|ndjson|csv]
jit audit events [--since T] [--until T] [--type T] [--request-id ID] [--limit N] [--all] [--format table|ndjson]
jit audit verify [--db FILE]
  Auditors and admins. T is an ISO 8601 time or a duration ago (--since 1h, --since 7d).
  --json prints the broker's rows as a JSON array; --format ndjson and csv stream every match.
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
    ...callerOptions,
    ...filterOptions,
    subject: { type: 'string' },
    scope: { type: 'string' },
    status: { type: 'string' },
    'break-glass': { type: 'string' },
  });
  const search = query({
    ...timeRange(values),
    subject: values.subject,
    scope: values.scope,
    status: values.status,
    break_glass: values['break-glass'],
    limit: values.limit,
  });
  return list<IssuanceView>(io, values, '/v1/audit/issuances', search, ['csv', 'ndjson'], {
    header: ['ISSUED', 'STATUS', 'SUBJECT', 'SCOPES', 'AUDIENCE', 'TASK', 'APPROVERS', ''],
    row: (row) => [
      row.issued_at,
      row.status,
      row.requester.sub,
      row.scopes.join(' '),
      row.audience,
      row.task_id,
      row.approvers.map((a) => a.sub).join(',') || '-',
      row.break_glass ? 'BREAK-GLASS' : '',
    ],
  });
}

async function events(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, { ...callerOptions, ...filterOptions, type: { type: 'string' }, 'request-id': { type: 'string' } });
  const search = query({ ...timeRange(values), type: values.type, request_id: values['request-id'], limit: values.limit });
  return list<EventView>(io, values, '/v1/audit/events', search, ['ndjson'], {
    header: ['SEQ', 'AT', 'TYPE', 'ACTOR', 'REQUEST', 'DATA'],
    row: (event) => [
      String(event.seq),
      event.at,
      event.type,
      event.actor ? event.actor.sub : '(broker)',
      event.request_id ?? '-',
      JSON.stringify(event.data),
    ],
  });
}

/** `--since` and `--until` as the API takes them: ISO times, from ISO times or durations ago. */
function timeRange(values: { since?: string | undefined; until?: string | undefined }) {
  const now = Date.now();
  return {
    since: values.since === undefined ? undefined : parseTime(values.since, '--since', now),
    until: values.until === undefined ? undefined : parseTime(values.until, '--until', now),
  };
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

type Values = CallerValues & { all: boolean; format: string; json: boolean };

/** Prints a listing: streamed as-is in a machine format, or read page by page as a table or JSON. */
async function list<T>(
  io: CliIo,
  values: Values,
  path: string,
  search: URLSearchParams,
  streamed: string[],
  view: { header: string[]; row: (item: T) => string[] },
): Promise<number> {
  if (values.format !== 'table' && !streamed.includes(values.format)) throw usage(`--format is table or ${streamed.join(' or ')}`);
  if (values.format !== 'table' && values.json) throw usage(`--json and --format ${values.format} are two different outputs: choose one`);
  const client = connect(io, values);
  if (values.format !== 'table') {
    search.set('format', values.format);
    const response = await client.raw(`${path}?${search}`);
    const reader = response.body?.getReader();
    const decoder = new TextDecoder();
    for (let chunk = await reader?.read(); chunk && !chunk.done; chunk = await reader?.read()) io.stdout(decoder.decode(chunk.value, { stream: true }));
    return EXIT.ok;
  }
  printListing(io, await readListing<T>(client, path, search, values.all), { json: values.json, empty: 'no rows', ...view });
  return EXIT.ok;
}
