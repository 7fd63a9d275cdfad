import { readFileSync } from 'node:fs';
import { decodeJwt } from 'jose';
import {
  CheckpointRefused,
  checkpointFromText,
  EvidenceUnreadable,
  verifyDatabaseFile,
  type EventView,
  type IssuanceView,
  type VerdictView,
} from '../../audit/index.js';
import { createClient } from '../client.js';
import { brokerUrl, CliError, connectionOptions, identityToken, parse, shown, usage, type CliIo } from '../io.js';

export const help = `jit audit issuances [--since T] [--until T] [--subject S] [--scope S] [--status issued|expired|revoked]
                    [--break-glass true|false] [--limit N] [--all] [--format table|ndjson|csv]
jit audit events [--since T] [--until T] [--type T] [--request-id ID] [--limit N] [--all] [--format table|ndjson]
jit audit verify [--db FILE] [--checkpoint FILE|-]
  Auditors and admins. T is an ISO 8601 time. ndjson and csv stream every match.
  verify checks the hash chain through the broker; --db checks a SQLite database file offline,
  without the broker, on a private copy (the file is only read; nothing is written beside it).
  --checkpoint also checks that the chain still holds the head a checkpoint names (the JWS, or
  the JSON of GET /v1/audit/checkpoint or of an audit.checkpoint webhook): deleting the newest
  events shows only this way. Exit 0 intact, 65 tampered or truncated, 66 cannot read the
  database or checkpoint file, 1 checkpoint not signed by this broker (or the broker refused).`;

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
  const { values } = parse(args, { ...connectionOptions, db: { type: 'string' }, checkpoint: { type: 'string' } });
  let checkpoint: string | undefined;
  if (values.checkpoint !== undefined) {
    let text: string;
    try {
      text = values.checkpoint === '-' ? io.readStdin() : readFileSync(values.checkpoint, 'utf8');
    } catch (error) {
      throw new CliError(`cannot read ${values.checkpoint}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`, EXIT_UNREADABLE);
    }
    checkpoint = checkpointFromText(text);
    if (!checkpoint) throw new CliError(`${values.checkpoint} holds no checkpoint (a JWS, or JSON with a "checkpoint" field)`, EXIT_UNREADABLE);
  }

  let verdict: VerdictView;
  if (values.db !== undefined) {
    if (/^postgres(ql)?:\/\//i.test(values.db)) throw usage('--db takes a SQLite file; verify a PostgreSQL database through the broker');
    try {
      verdict = (await verifyDatabaseFile(values.db, checkpoint)).verdict;
    } catch (error) {
      if (error instanceof EvidenceUnreadable) throw new CliError(error.message, EXIT_UNREADABLE);
      if (error instanceof CheckpointRefused) throw new CliError(error.message);
      throw error;
    }
  } else {
    const client = createClient(io, brokerUrl(io, values), identityToken(io, values['identity-file']));
    verdict = await client.get(`/v1/audit/verify${checkpoint ? `?checkpoint=${encodeURIComponent(checkpoint)}` : ''}`);
  }

  if (values.json) io.stdout(`${JSON.stringify(verdict)}\n`);
  else if (verdict.ok) io.stdout(`ok: ${verdict.events} events, head ${verdict.head}${checkpoint ? `, holding the checkpoint's head (seq ${claimedSeq(checkpoint)})` : ''}\n`);
  else if ('reason' in verdict) io.stdout(`TRUNCATED: the chain no longer holds the checkpoint's head (seq ${claimedSeq(checkpoint)})\n`);
  else io.stdout(`BROKEN: the chain fails at seq ${verdict.first_bad_seq}\n`);
  return verdict.ok ? 0 : EXIT_TAMPERED;
}

/** sysexits: the data is wrong (the chain), or the input cannot be read. */
const EXIT_TAMPERED = 65;
const EXIT_UNREADABLE = 66;

/** The seq a checkpoint names, for the message (its signature was checked where it was verified). */
const claimedSeq = (checkpoint: string | undefined) => {
  try {
    return String(checkpoint ? decodeJwt(checkpoint).seq : '?');
  } catch {
    return '?';
  }
};

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
