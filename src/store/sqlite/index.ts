import type { Clock } from '../../shared/clock.js';
import { openDatabase } from './database.js';
import { createSqliteStore, type SqliteStore } from './store.js';

export { MIGRATIONS_DIR, migrate, migrationFiles, openDatabase, unknownSchemaVersions } from './database.js';
export type { Db } from './database.js';
export { createSqliteStore, openSqliteStore } from './store.js';
export type { SqliteStore } from './store.js';

/** A database file opened read-only, for offline verification of the audit chain: nothing is written. */
export function openSqliteReadOnly(path: string, clock: Clock): SqliteStore {
  return createSqliteStore(openDatabase(path, { readonly: true }), clock);
}
