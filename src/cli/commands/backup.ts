import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, linkSync, openSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import Database from 'better-sqlite3';
import { verifyStoredChain } from '../../audit/index.js';
import { databaseEngine } from '../../config/index.js';
import { openSqliteReadOnly, SchemaTooNew } from '../../store/index.js';
import { unknownSchemaVersions } from '../../store/sqlite/index.js';
import { CliError, parse, usage, type CliIo } from '../io.js';

export const backupHelp = `jit backup --db FILE --out FILE [--json]
  A consistent copy of a SQLite database, taken with SQLite's online backup API while the broker
  runs and writes; its audit chain is verified before it is given its name. Never overwrites,
  and never writes into a directory every user may write to (/tmp, say).
  PostgreSQL: use pg_dump and pg_restore (README, "Backups").`;

export const restoreHelp = `jit restore --from BACKUP --db FILE [--json]
  Puts a backup in place after verifying its audit chain. Refused while any process (a broker)
  has FILE open; a FILE already there is kept beside it as FILE.before-restore-<time>.
  PostgreSQL: use pg_dump and pg_restore (README, "Backups").`;

/** The whole database in one step, so the copy is one snapshot however the broker writes meanwhile. */
const ALL_PAGES = 0x7fffffff;

interface Verified {
  events: number;
  head: string;
}

const sqliteOnly = (file: string, flag: string) => {
  if (databaseEngine(file) === 'postgres') {
    throw new CliError(`${flag} names a PostgreSQL database: back it up with pg_dump and restore it with pg_restore (README, "Backups")`);
  }
};

/** A name beside `file` that nothing else uses, for a copy in progress (same directory: the rename is atomic). */
const partName = (file: string, what: string) => join(dirname(file), `.${basename(file)}.${what}-${randomBytes(4).toString('hex')}`);

/**
 * Copies `from` to the new, empty, private file `to` with SQLite's online backup API, in one
 * step: one read snapshot of the source, whatever its other connections write meanwhile. The
 * copy is left in rollback-journal mode, one self-contained file (a broker that opens it turns
 * WAL on again).
 */
async function copyDatabase(from: string, to: string): Promise<void> {
  const source = new Database(from, { readonly: true, fileMustExist: true, timeout: 5_000 });
  try {
    await source.backup(to, { progress: () => ALL_PAGES });
  } finally {
    source.close();
  }
  const copy = new Database(to, { fileMustExist: true });
  try {
    copy.pragma('journal_mode = DELETE');
  } finally {
    copy.close();
  }
}

/**
 * SQLite opens the copy by its name, and applies to it the `-wal` or hot `-journal` file it finds
 * beside it. In a directory every user may write to (sticky or not: a file of one's own may be
 * made there) anyone could put one there and rewrite the backup before it is checked and named.
 */
function refuseSharedDirectory(dir: string): void {
  const mode = statSync(dir).mode;
  if ((mode & 0o002) !== 0) {
    throw new CliError(
      `${dir} is writable by every user (mode ${(mode & 0o7777).toString(8)}): anyone could slip a file into the backup there; back up into a directory only you (and your group) may write to`,
    );
  }
}

/** Makes a rename or a new file in `dir` survive a power loss. */
function syncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Checks a database file as a restore would trust it: SQLite's own structure check, a schema this
 * release knows, and an audit chain that verifies from its first event to its head.
 */
async function verifyFile(file: string): Promise<Verified> {
  let store;
  try {
    store = openSqliteReadOnly(file, Date.now);
  } catch (error) {
    throw new CliError(`cannot open ${file}: ${(error as Error).message}`);
  }
  try {
    const check = store.db.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw new CliError(`${file} is damaged: ${String(check)}`);
    const newer = unknownSchemaVersions(store.db);
    if (newer.length > 0) throw new CliError(`${file}: ${new SchemaTooNew(newer).message}`);
    const hasEvents = store.db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_events'`).get();
    if (!hasEvents) throw new CliError(`${file} is not a broker database (it has no audit log)`);
    const verdict = await verifyStoredChain(store.events);
    if (!verdict.ok) throw new CliError(`the audit chain of ${file} is broken at seq ${verdict.firstBadSeq}`);
    return { events: verdict.events, head: verdict.head };
  } finally {
    await store.close();
  }
}

/** `jit backup`: an online, consistent, verified copy. */
export async function backup(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, { db: { type: 'string' }, out: { type: 'string' }, json: { type: 'boolean', default: false } });
  if (!values.db || !values.out) throw usage('backup needs --db FILE and --out FILE');
  sqliteOnly(values.db, '--db');
  if (!existsSync(values.db)) throw new CliError(`${values.db} does not exist`);
  if (existsSync(values.out)) throw new CliError(`${values.out} already exists; a backup never overwrites: choose another name`);
  if (!existsSync(dirname(values.out))) throw new CliError(`${dirname(values.out)} does not exist`);
  refuseSharedDirectory(dirname(values.out));

  const part = partName(values.out, 'partial');
  // The audit log is nobody else's business: the copy is created private, before SQLite writes to it.
  writeFileSync(part, '', { mode: 0o600, flag: 'wx' });
  try {
    await copyDatabase(values.db, part);
    const verified = await verifyFile(part);
    // A link, not a rename: it fails on anything at --out by now (a file written meanwhile, a
    // dangling symlink), where a rename would silently replace it.
    try {
      linkSync(part, values.out);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw new CliError(`${values.out} already exists; a backup never overwrites: choose another name`);
      throw error;
    }
    syncDirectory(dirname(values.out));
    report(io, values.json, { backup: values.out, ...verified }, `backed up ${values.db} to ${values.out}: ${verified.events} events, chain head ${verified.head}\n`);
    return 0;
  } finally {
    rmSync(part, { force: true });
  }
}

/**
 * Takes `file` for the restore: fails while any connection has it open (every SQLite connection
 * to a WAL database holds a shared lock as long as it is open), else folds its WAL into it and
 * holds it exclusively, so no broker opens it while it is swapped.
 */
function takeExclusively(file: string): Database.Database {
  const guard = new Database(file, { fileMustExist: true, timeout: 0 });
  try {
    guard.pragma('journal_mode = DELETE');
    guard.exec('BEGIN EXCLUSIVE');
    return guard;
  } catch (error) {
    guard.close();
    if ((error as { code?: string }).code?.startsWith('SQLITE_BUSY')) {
      throw new CliError(`${file} is open in another process (a broker?): stop it first; nothing was changed`);
    }
    throw new CliError(`cannot take ${file} for the restore: ${(error as Error).message}`);
  }
}

/** `jit restore`: a verified backup put in place of a database no one has open. */
export async function restore(args: string[], io: CliIo): Promise<number> {
  const { values } = parse(args, { from: { type: 'string' }, db: { type: 'string' }, json: { type: 'boolean', default: false } });
  if (!values.from || !values.db) throw usage('restore needs --from BACKUP and --db FILE');
  sqliteOnly(values.db, '--db');
  sqliteOnly(values.from, '--from');
  if (!existsSync(values.from)) throw new CliError(`${values.from} does not exist`);
  if (!existsSync(dirname(values.db))) throw new CliError(`${dirname(values.db)} does not exist`);
  await verifyFile(values.from);
  if (existsSync(values.db)) takeExclusively(values.db).close(); // fail early; taken again for the swap

  // A copy beside the target first, verified again as it will be used; then one rename puts it in place.
  const part = partName(values.db, 'restoring');
  writeFileSync(part, '', { mode: 0o600, flag: 'wx' });
  try {
    await copyDatabase(values.from, part);
    const verified = await verifyFile(part);

    let keptAs: string | undefined;
    const guard = existsSync(values.db) ? takeExclusively(values.db) : undefined;
    try {
      if (guard) {
        keptAs = `${values.db}.before-restore-${new Date().toISOString().replace(/[:.]/g, '-')}`;
        renameSync(values.db, keptAs);
        // Left by the replaced database; the restored one starts its own.
        for (const suffix of ['-wal', '-shm', '-journal']) rmSync(`${values.db}${suffix}`, { force: true });
      }
      renameSync(part, values.db);
      syncDirectory(dirname(values.db));
    } finally {
      guard?.close();
    }
    report(
      io,
      values.json,
      { restored: values.db, from: values.from, ...verified, ...(keptAs ? { previous: keptAs } : {}) },
      `restored ${values.db} from ${values.from}: ${verified.events} events, chain head ${verified.head}\n` +
        (keptAs ? `the database it replaced is kept as ${keptAs}\n` : ''),
    );
    return 0;
  } finally {
    rmSync(part, { force: true });
  }
}

function report(io: CliIo, json: boolean, fields: Record<string, unknown>, text: string): void {
  io.stdout(json ? `${JSON.stringify(fields)}\n` : text);
}
