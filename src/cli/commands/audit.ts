import { readFileSync } from 'node:fs';
import { decodeJwt } from 'jose';
import {
  CheckpointRefused,
  checkpointFromText,
  EvidenceUnreadable,
  readCheckpoint,
  verifyDatabaseFile,
  type CheckpointTrust,
  type CustodyView,
  type EntitlementView,
  type EventView,
  type IssuanceView,
  type TrustedKeys,
  type VerdictView,
} from '../../audit/index.js';
import { callerOptions, connect, type CallerValues } from '../client.js';
import { parseTime } from '../duration.js';
import { CliError, EXIT, parse, shown, shownExport, shownJson, usage, type CliIo } from '../io.js';
import { JwksUnreadable, readTrustedJwks } from '../jwks.js';
import { printListing, query, readListing } from '../listing.js';

export const help = `jit audit issuances [--since T] [--until T] [--subject S] [--scope S] [--status issued|expired|revoked]
                    [--break-glass true|false] [--type T] [--identifier ID] [--actor SUB] [--limit N] [--all] [--format table|ndjson|csv]
jit audit events [--since T] [--until T] [--type T] [--request-id ID] [--limit N] [--all] [--format table|ndjson]
jit audit duties --duty DUTY --identifier ID [--limit N] [--all]
jit audit entitlements [--since 30d]
jit audit verify [--db FILE] [--checkpoint FILE|-] [--jwks FILE|URL]
  Auditors and admins. T is an ISO 8601 time or a duration ago (--since 1h, --since 7d).
  --json prints the broker's rows as a JSON array; --format ndjson and csv stream every match.
  entitlements: one row per (policy, scope) the running configuration grants, with the tokens
  issued under it since --since (default 30 days ago); ISSUED 0 is a grant nobody uses.
  verify checks the hash chain through the broker; --db checks a SQLite database file offline,
  without the broker, on a private copy (the file is only read; nothing is written beside it).
  --checkpoint also checks that the chain still holds the head a checkpoint names (the JWS, or
  the JSON of GET /v1/audit/checkpoint or of an audit.checkpoint webhook): deleting the newest
  events shows only this way. --jwks names the keys the checkpoint must be signed with: the
  broker's /.well-known/jwks.json kept with the checkpoint (a file), or an https URL (plain http
  only to this machine). Without it, --db checks the checkpoint against the keys in the file
  itself, which whoever rewrote the file could have rewritten too: that shows only that the
  chain is consistent with itself (a warning on stderr says so). Through the broker, the broker
  checks it against its own keys, and --jwks checks it here as well. A broker's JWKS holds the
  keys of its database, and a key leaves it soon after it stops signing: keep the JWKS of the
  day the checkpoint was signed. --json adds "trust": "jwks", "broker" or "file" when a
  checkpoint was checked: whose keys vouched for it. Exit 0 intact, 65 tampered or truncated,
  66 cannot read the database, checkpoint or JWKS, 1 checkpoint not signed by a trusted key (the
  JWKS's, else the broker's or the file's; or the broker refused).`;

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
  if (what === 'duties') return duties(rest, io);
  if (what === 'entitlements') return entitlements(rest, io);
  if (what === 'verify') return verify(rest, io);
  throw usage('audit needs issuances, events, duties, entitlements or verify');
}

async function issuances(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, {
    ...callerOptions,
    ...filterOptions,
    subject: { type: 'string' },
    scope: { type: 'string' },
    status: { type: 'string' },
    'break-glass': { type: 'string' },
    type: { type: 'string' },
    identifier: { type: 'string' },
    actor: { type: 'string' },
  });
  const search = query({
    ...timeRange(values),
    subject: values.subject,
    scope: values.scope,
    status: values.status,
    break_glass: values['break-glass'],
    type: values.type,
    identifier: values.identifier,
    actor: values.actor,
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

/** One object's chain of custody: who took part in which step, approved by whom, how it ended. */
async function duties(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, { ...callerOptions, duty: { type: 'string' }, identifier: { type: 'string' }, limit: { type: 'string' }, all: { type: 'boolean', default: false } });
  if (!values.duty || !values.identifier) throw usage('duties needs --duty and --identifier');
  const search = query({ duty: values.duty, identifier: values.identifier, limit: values.limit });
  printListing(io, await readListing<CustodyView>(connect(io, values), '/v1/audit/duties', search, values.all), {
    json: values.json,
    empty: 'no request named this object for a step of this duty',
    header: ['CREATED', 'STEP', 'STATUS', 'REQUESTER', 'INITIATOR', 'APPROVALS', 'REQUEST'],
    row: (row) => [
      row.created_at,
      row.step,
      row.status,
      row.requester.sub,
      row.initiator ?? '-',
      row.approvals.map((a) => `${a.sub}:${a.decision}`).join(',') || '-',
      row.request_id,
    ],
  });
  return EXIT.ok;
}

/** The drift report: what the configuration grants against what was used since `--since`. */
async function entitlements(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, { ...callerOptions, since: { type: 'string' } });
  const { since } = timeRange(values);
  const report = await connect(io, values).get<{ since: string; items: EntitlementView[] }>(`/v1/audit/entitlements${since ? `?${query({ since })}` : ''}`);
  printListing(io, { items: report.items, more: false }, {
    json: values.json,
    empty: 'the configuration grants nothing',
    header: ['POLICY', 'SCOPE', 'ISSUED', 'LAST ISSUED'],
    row: (row) => [row.policy, row.scope, String(row.issued), row.last_issued_at ?? '-'],
  });
  if (!values.json) {
    const unused = report.items.filter((row) => row.issued === 0).length;
    io.stderr(`since ${shown(report.since)}: ${unused} of ${report.items.length} grants unused\n`);
  }
  return EXIT.ok;
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
  const { values } = parse(args, { ...callerOptions, db: { type: 'string' }, checkpoint: { type: 'string' }, jwks: { type: 'string' } });
  if (values.jwks !== undefined && values.checkpoint === undefined) throw usage('--jwks names the keys a checkpoint must be signed with: give --checkpoint too');
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
  if (values.db !== undefined && /^postgres(ql)?:\/\//i.test(values.db)) throw usage('--db takes a SQLite file; verify a PostgreSQL database through the broker');
  const trusted = values.jwks === undefined ? undefined : await trustedJwks(io, values.jwks);

  let verdict: VerdictView;
  let trust: CheckpointTrust | undefined;
  if (values.db !== undefined) {
    try {
      ({ verdict, trust } = await verifyDatabaseFile(values.db, checkpoint, trusted));
    } catch (error) {
      if (error instanceof EvidenceUnreadable) throw new CliError(error.message, EXIT_UNREADABLE);
      if (error instanceof CheckpointRefused) throw new CliError(error.message);
      throw error;
    }
    if (trust === 'file') {
      io.stderr(
        `jit audit: warning: the checkpoint was checked only against keys read from ${values.db} itself: whoever rewrote the file could have signed it with a key of their own, so this shows only that the chain is consistent with itself. Give --jwks the broker's JWKS, kept with the checkpoint, to know the broker signed it.\n`,
      );
    }
  } else {
    // The broker checks the checkpoint against the keys in its own database; the trusted JWKS is checked here first.
    if (checkpoint !== undefined && trusted && !(await readCheckpoint(checkpoint, { keys: trusted.keys }))) {
      throw new CliError(`the checkpoint is not a checkpoint+jwt signed by one of the keys in ${trusted.name}`);
    }
    verdict = await connect(io, values).get(`/v1/audit/verify${checkpoint ? `?checkpoint=${encodeURIComponent(checkpoint)}` : ''}`);
    if (checkpoint !== undefined) trust = trusted ? 'jwks' : 'broker';
  }

  if (values.json) io.stdout(`${shownJson(trust ? { ...verdict, trust } : verdict)}\n`);
  else if (verdict.ok) io.stdout(`ok: ${shown(String(verdict.events))} events, head ${shown(String(verdict.head))}${checkpoint ? `, holding the checkpoint's head (seq ${claimedSeq(checkpoint)})` : ''}\n`);
  else if ('reason' in verdict) io.stdout(`TRUNCATED: the chain no longer holds the checkpoint's head (seq ${claimedSeq(checkpoint)})\n`);
  else io.stdout(`BROKEN: the chain fails at seq ${shown(String(verdict.first_bad_seq))}\n`);
  return verdict.ok ? 0 : EXIT_TAMPERED;
}

/** The keys of `--jwks`; one that cannot be had is input that cannot be read. */
async function trustedJwks(io: CliIo, source: string): Promise<TrustedKeys> {
  try {
    return await readTrustedJwks(io, source);
  } catch (error) {
    if (error instanceof JwksUnreadable) throw new CliError(error.message, EXIT_UNREADABLE);
    throw error;
  }
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
    try {
      for (let chunk = await reader?.read(); chunk && !chunk.done; chunk = await reader?.read()) {
        const text = decoder.decode(chunk.value, { stream: true });
        io.stdout(io.stdoutTerminal ? shownExport(text, values.format as 'ndjson' | 'csv') : text);
      }
    } catch (error) {
      throw new CliError(`the export from ${client.base} stopped before its end (${(error as Error).message}); what was printed is incomplete`, EXIT.unreachable);
    }
    return EXIT.ok;
  }
  printListing(io, await readListing<T>(client, path, search, values.all), { json: values.json, empty: 'no rows', ...view });
  return EXIT.ok;
}
