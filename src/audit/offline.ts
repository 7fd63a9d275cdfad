import { copyFileSync, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeProtectedHeader } from 'jose';
import { openSqliteReadOnly } from '../store/index.js';
import { readCheckpoint, verdictView, verifyChainHolds, type ChainHead, type CheckpointKeys, type CheckpointTrust, type VerdictView } from './checkpoint.js';
import type { TrustedKeys } from './trusted-keys.js';

/** The database file (or its copy) cannot be read as a broker database: nothing can be said about the chain. */
export class EvidenceUnreadable extends Error {
  override readonly name = 'EvidenceUnreadable';
}

/** The checkpoint is not a `checkpoint+jwt` signed by one of the trusted keys (else, of this database's). */
export class CheckpointRefused extends Error {
  override readonly name = 'CheckpointRefused';
}

export interface OfflineVerdict {
  verdict: VerdictView;
  /** The head the checkpoint names, when one was given. */
  checkpoint?: ChainHead;
  /** Whether the file had a `-wal` beside it, whose committed events were verified too. */
  wal: boolean;
  /** When a checkpoint was given: whose keys vouched for it, trusted ones or only the file's own. */
  trust?: Extract<CheckpointTrust, 'jwks' | 'file'>;
}

/**
 * Verifies the audit chain of a SQLite database file without the broker, treating the file as
 * evidence. Its checkpoint is checked against `trusted` keys where given; else against the keys
 * the file itself holds, which shows only that the chain is consistent with itself, since whoever
 * rewrote the file could have written a key of their own too (`trust: 'file'` says so).
 *
 * The file is only ever read, and only by copying. SQLite, even read-only, creates `-wal` and
 * `-shm` files beside a WAL database it opens, so the file (and its `-wal`, which holds the
 * newest events until the broker folds them in) is copied into a private temporary directory
 * first, verified there, and the copy removed. A file with no `-wal` beside it (a copy, a
 * backup, a broker that stopped cleanly) is verified as it is.
 */
export async function verifyDatabaseFile(file: string, checkpoint?: string, trusted?: TrustedKeys): Promise<OfflineVerdict> {
  const dir = mkdtempSync(join(tmpdir(), 'jit-audit-verify-'));
  try {
    const copy = join(dir, 'evidence.db');
    const wal = snapshot(file, copy);
    let store;
    try {
      store = openSqliteReadOnly(copy, Date.now);
    } catch (error) {
      throw new EvidenceUnreadable(`${file} is not a readable SQLite database (${(error as Error).message})`, { cause: error });
    }
    try {
      let head: ChainHead | undefined;
      if (checkpoint !== undefined) {
        // Offline there is no configuration to say who the broker is: the key is what counts.
        head = await readCheckpoint(checkpoint, { keys: trusted?.keys ?? store.keys });
        if (!head) throw new CheckpointRefused(trusted ? await refusal(checkpoint, trusted, file, store.keys) : 'the checkpoint is not a checkpoint+jwt signed by one of the keys in this database');
      }
      const verdict = verdictView(await verifyChainHolds(store.events, head));
      return {
        verdict,
        wal,
        ...(head ? { checkpoint: { seq: head.seq, hash: head.hash }, trust: trusted ? ('jwks' as const) : ('file' as const) } : {}),
      };
    } catch (error) {
      if (error instanceof CheckpointRefused) throw error;
      // A missing table, a malformed page: not a broker database we can judge.
      throw new EvidenceUnreadable(`${file} cannot be read as a broker database (${(error as Error).message})`, { cause: error });
    } finally {
      await store.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Why trusted keys refused a checkpoint, naming the case that matters: a key the file holds and
 * the trusted JWKS does not, which is what a checkpoint signed by whoever rewrote the file looks like.
 */
async function refusal(checkpoint: string, trusted: TrustedKeys, file: string, fileKeys: CheckpointKeys): Promise<string> {
  const refused = `the checkpoint is not a checkpoint+jwt signed by one of the keys in ${trusted.name}`;
  let kid: unknown;
  try {
    kid = decodeProtectedHeader(checkpoint).kid;
  } catch {
    return refused;
  }
  if (typeof kid !== 'string') return refused;
  if (await trusted.keys.get(kid)) return `${refused}: it does not verify against key ${kid} there`;
  if (!(await fileKeys.get(kid))) return refused;
  return `${refused}: it names key ${kid}, which ${file} holds but ${trusted.name} does not (whoever can rewrite the file can put a key of their own in it)`;
}

/**
 * Copies the database file and its `-wal` (never the `-shm`, which SQLite rebuilds). A broker
 * still running may fold the WAL into the file between the two copies; the file's size and
 * modification time tell, and the copy is taken again.
 */
function snapshot(file: string, copy: string): boolean {
  const stamp = () => {
    const stat = statSync(file, { bigint: true });
    if (!stat.isFile()) throw new EvidenceUnreadable(`${file} is not a file`);
    return `${stat.size}:${stat.mtimeNs}`;
  };
  try {
    for (let attempt = 0; attempt < 5; attempt += 1) {
      const before = stamp();
      copyFileSync(file, copy);
      const wal = existsSync(`${file}-wal`);
      if (wal) copyFileSync(`${file}-wal`, `${copy}-wal`);
      else rmSync(`${copy}-wal`, { force: true });
      if (stamp() === before) return wal;
    }
  } catch (error) {
    if (error instanceof EvidenceUnreadable) throw error;
    throw new EvidenceUnreadable(`cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, { cause: error });
  }
  throw new EvidenceUnreadable(`${file} kept changing while it was copied; verify a backup, or through the broker`);
}
