import type { Clock } from '../shared/clock.js';
import type { Store } from './contract.js';
import type { OnConflict } from './postgres/retry.js';
import { openSqliteStore } from './sqlite/index.js';

export interface StoreOptions {
  /**
   * Told of each deadlock or serialization failure PostgreSQL reported, and whether the store ran
   * the operation again (else its callers got 503): for metrics, which the store knows nothing of.
   * SQLite's one writer has neither.
   */
  onConflict?: OnConflict;
  /**
   * SQLite's fdatasync of its WAL (see `walSync`), injectable: a test holds one to see what the
   * broker exposes between a commit and its sync. PostgreSQL has no such step: its commit
   * returns durable.
   */
  datasync?: (fd: number) => Promise<void>;
}

/** A `postgres://` URL selects PostgreSQL; anything else is a SQLite file path (CONTRACT section 2). */
export const isPostgresUrl = (database: string): boolean => /^postgres(ql)?:\/\//i.test(database);

/** Opens the configured database, applying its migrations, and returns the store over it. */
export async function openStore(database: string, clock: Clock, options: StoreOptions = {}): Promise<Store> {
  if (isPostgresUrl(database)) {
    const { openPostgresStore } = await import('./postgres/index.js');
    return openPostgresStore(database, clock, options.onConflict);
  }
  return openSqliteStore(database, clock, options.datasync);
}
