import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type { Db } from './database.js';

/** How often the WAL is copied back into the database file: a few MB of WAL at most, under load. */
const CHECKPOINT_EVERY_MS = 1000;
/** SQLite's own default, put back should the thread stop: the WAL must never grow without end. */
const AUTO_CHECKPOINT_PAGES = 1000;

// Plain JavaScript, evaluated in the thread: nothing to compile, wherever the broker runs from.
const THREAD = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.path, { fileMustExist: true });
db.pragma('busy_timeout = 0');
const checkpoint = () => {
  try {
    db.pragma('wal_checkpoint(PASSIVE)');
  } catch (error) {
    if (!String(error.code).startsWith('SQLITE_BUSY')) throw error; // another process's checkpoint: it does the work
  }
};
const timer = setInterval(checkpoint, workerData.everyMs);
parentPort.on('message', () => {
  clearInterval(timer);
  db.close();
  parentPort.close();
});
`;

export interface Checkpointer {
  close(): Promise<void>;
}

/**
 * Checkpoints the WAL from a thread of its own, on a connection of its own. SQLite would
 * otherwise checkpoint inside a COMMIT every thousand pages, on the event loop: writing those
 * pages back into the database file and syncing it twice while every request waits. A PASSIVE
 * checkpoint takes no lock writers need, so the writer never waits on it. Should the thread stop
 * (it cannot open the file, say), the writer's connection checkpoints itself again, as SQLite does.
 */
export function startCheckpointer(db: Db): Checkpointer {
  if (db.memory || db.readonly) return { close: async () => {} };
  db.pragma('wal_autocheckpoint = 0');
  const driver = createRequire(import.meta.url).resolve('better-sqlite3');
  const thread = new Worker(THREAD, { eval: true, workerData: { driver, path: db.name, everyMs: CHECKPOINT_EVERY_MS } });
  let closing = false;
  const exited = new Promise<void>((resolve) => thread.once('exit', () => resolve()));
  thread.on('error', () => {}); // the exit that follows is what counts
  void exited.then(() => {
    if (!closing && db.open) db.pragma(`wal_autocheckpoint = ${AUTO_CHECKPOINT_PAGES}`);
  });
  thread.unref();
  return {
    async close() {
      closing = true;
      thread.ref(); // the process waits for the thread's last checkpoint and its exit, then goes on closing
      thread.postMessage('close');
      await exited;
    },
  };
}
