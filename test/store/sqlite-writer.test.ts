import { readdirSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Unavailable } from '../../src/shared/errors.js';
import { openDatabase, type Db } from '../../src/store/sqlite/database.js';
import { createWriter, walSync, type Sync } from '../../src/store/sqlite/writer.js';
import { ENGINE } from '../helpers/engine.js';
import { tempDir } from '../helpers/temp.js';

/**
 * The SQLite writer commits with synchronous=NORMAL and makes the WAL durable itself, off the
 * event loop (CONTRACT section 5: a token is recorded durably before it is returned). What must
 * hold: no caller hears back before the sync that covers its commit has finished; a failed sync
 * fails its callers and every write after it; what arrives during a sync shares the next commit.
 */

function database(): Db {
  const db = openDatabase(join(tempDir('jit-writer-'), 'w.db'));
  db.exec('CREATE TABLE rows (n INTEGER NOT NULL) STRICT');
  return db;
}

/** A sync the test finishes by hand, counting how often it was begun. */
function manualSync() {
  const pending: { resolve: () => void; reject: (error: Error) => void }[] = [];
  const sync: Sync & { begun: number } = {
    begun: 0,
    run: () => {
      sync.begun += 1;
      return new Promise<void>((resolve, reject) => pending.push({ resolve, reject }));
    },
    close: () => {},
  };
  return { sync, pending };
}

const settled = async <T>(promise: Promise<T>) => {
  let state = 'pending';
  promise.then(
    () => (state = 'resolved'),
    () => (state = 'rejected'),
  );
  for (let i = 0; i < 5; i += 1) await new Promise((resolve) => setImmediate(resolve));
  return state;
};

const count = (db: Db) => (db.prepare('SELECT count(*) AS n FROM rows').get() as { n: number }).n;

describe.runIf(ENGINE === 'sqlite')('the SQLite writer', () => {
  it('answers every caller of a batch, and commits none of it, when a savepoint cannot be taken', async () => {
    const db = database();
    let savepoints = 0;
    // The connection as the writer sees it, its second SAVEPOINT failing as an I/O error would.
    const failing = new Proxy(db, {
      get(target, key) {
        if (key === 'prepare') {
          return (sql: string) => {
            const statement = target.prepare(sql);
            if (!sql.startsWith('SAVEPOINT')) return statement;
            return {
              run: () => {
                savepoints += 1;
                if (savepoints === 2) throw new Error('disk I/O error');
                return statement.run();
              },
            };
          };
        }
        const value: unknown = Reflect.get(target, key);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const writer = createWriter(failing, Date.now);
    const insert = db.prepare('INSERT INTO rows (n) VALUES (1)');
    const both = Promise.allSettled([writer.run(async () => insert.run()), writer.run(async () => insert.run())]);
    expect(await settled(both)).toBe('resolved');
    expect((await both).map((result) => result.status)).toEqual(['rejected', 'rejected']);
    expect(count(db)).toBe(0);
    expect(db.inTransaction).toBe(false);
  });

  it('answers a commit only once a sync begun after it has finished', async () => {
    const db = database();
    const { sync, pending } = manualSync();
    const writer = createWriter(db, Date.now, undefined, sync);
    const insert = db.prepare('INSERT INTO rows (n) VALUES (1)');

    const written = writer.run(async () => insert.run().changes);
    expect(await settled(written)).toBe('pending');
    expect(count(db)).toBe(1); // committed, and not yet said to be
    expect(sync.begun).toBe(1);
    pending[0]?.resolve();
    expect(await written).toBe(1);
  });

  it('commits nothing more while a sync runs: what arrives meanwhile shares the next commit and sync', async () => {
    const db = database();
    const { sync, pending } = manualSync();
    const writer = createWriter(db, Date.now, undefined, sync);
    const insert = db.prepare('INSERT INTO rows (n) VALUES (1)');

    const first = writer.run(async () => insert.run());
    await settled(first);
    const later = [];
    for (let i = 0; i < 3; i += 1) {
      later.push(writer.run(async () => insert.run()));
      await settled(later[i] as Promise<unknown>);
    }
    expect(count(db)).toBe(1);
    expect(sync.begun).toBe(1);
    pending[0]?.resolve();
    await first;
    expect(await settled(Promise.all(later))).toBe('pending');
    expect(count(db)).toBe(4); // the three in one commit
    expect(sync.begun).toBe(2);
    pending[1]?.resolve();
    await Promise.all(later);
  });

  it('fails the callers of a failed sync, then every later write, and says it is not ready', async () => {
    const db = database();
    const { sync, pending } = manualSync();
    const writer = createWriter(db, Date.now, undefined, sync);
    const insert = db.prepare('INSERT INTO rows (n) VALUES (1)');

    const written = writer.run(async () => insert.run());
    await settled(written);
    pending[0]?.reject(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));
    await expect(written).rejects.toBeInstanceOf(Unavailable);
    expect(writer.lastFailure()).toBeDefined();
    // The kernel may have dropped what it could not write: nothing after it is called durable.
    await expect(writer.run(async () => insert.run())).rejects.toBeInstanceOf(Unavailable);
    expect(count(db)).toBe(1);
    expect(sync.begun).toBe(1);
  });

  it('refuses what was queued during a sync that fails: never committed, never answered as durable', async () => {
    // A checkpoint's head is read through the writer because the writer answers only once durable:
    // one queued behind a failing sync and answered after the next, which the kernel may report
    // clean after dropping the pages, would sign a head the disk may not hold.
    const db = database();
    const { sync, pending } = manualSync();
    const writer = createWriter(db, Date.now, undefined, sync);
    const insert = db.prepare('INSERT INTO rows (n) VALUES (1)');

    const written = writer.run(async () => insert.run());
    await settled(written);
    const queued = writer.run(async () => insert.run());
    await settled(queued);
    pending[0]?.reject(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));
    await expect(written).rejects.toBeInstanceOf(Unavailable);
    expect(await settled(queued)).toBe('rejected');
    await expect(queued).rejects.toBeInstanceOf(Unavailable);
    expect(count(db)).toBe(1);
    expect(sync.begun).toBe(1);
  });

  it('takes the syncing over from SQLite on a file, and has nothing to sync in memory', async () => {
    const db = database();
    const sync = walSync(db);
    expect(db.pragma('synchronous', { simple: true })).toBe(1); // NORMAL: COMMIT writes the WAL, syncs nothing
    db.prepare('INSERT INTO rows (n) VALUES (1)').run();
    expect(statSync(`${db.name}-wal`).size).toBeGreaterThan(0);
    await expect(sync.run()).resolves.toBeUndefined();
    sync.close();
    // What it syncs is the WAL itself: the file every commit was written to.
    const synced: string[] = [];
    const recorded = walSync(db, async (fd) => void synced.push(readlinkSync(`/proc/self/fd/${fd}`)));
    await recorded.run();
    expect(synced).toEqual([realpathSync(`${db.name}-wal`)]);
    recorded.close();

    const memory = openDatabase(':memory:');
    const none = walSync(memory);
    await expect(none.run()).resolves.toBeUndefined();
    expect(memory.pragma('synchronous', { simple: true })).toBe(2); // FULL, as opened: untouched
  });

  it("keeps an operation's statement journal in memory: no temporary file, and a failed operation still undone", async () => {
    const db = database();
    const writer = createWriter(db, Date.now, undefined, noSync());
    db.exec('CREATE TABLE wide (body TEXT NOT NULL) STRICT');
    const fill = db.prepare(
      "WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) INSERT INTO wide (body) SELECT printf('%.3000c', 'x') FROM n",
    );
    await writer.run(async () => fill.run()); // pages that exist before the next operation's savepoint

    // Rewriting 100 pages journals 400 KB, far past the 64 KB that SQLite keeps in memory by default.
    const rewrite = db.prepare("UPDATE wide SET body = printf('%.3000c', 'y')");
    let tempFiles: string[] = [];
    const failed = writer.run(async () => {
      rewrite.run();
      tempFiles = sqliteTempFiles();
      throw new Error('the operation fails after its writes');
    });
    await expect(failed).rejects.toThrow('the operation fails after its writes');
    expect(tempFiles).toEqual([]);
    expect(db.prepare("SELECT count(*) AS n FROM wide WHERE body LIKE 'x%'").get()).toEqual({ n: 100 });
  });
});

/** A sync with nothing to wait for: the test is about what happens inside the transaction. */
function noSync(): Sync {
  return { run: async () => {}, close: () => {} };
}

/** This process's open SQLite temporary files (SQLite names them etilqs_*, and unlinks them at once). */
function sqliteTempFiles(): string[] {
  return readdirSync('/proc/self/fd').flatMap((fd) => {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      return target.includes('etilqs_') ? [target] : [];
    } catch {
      return []; // closed meanwhile
    }
  });
}
