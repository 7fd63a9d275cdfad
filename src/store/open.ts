import type { Clock } from '../shared/clock.js';
import type { Store } from './contract.js';
import { openSqliteStore } from './sqlite/index.js';

/** A `postgres://` URL selects PostgreSQL; anything else is a SQLite file path (CONTRACT section 2). */
export const isPostgresUrl = (database: string): boolean => /^postgres(ql)?:\/\//i.test(database);

/** Opens the configured database, applying its migrations, and returns the store over it. */
export async function openStore(database: string, clock: Clock): Promise<Store> {
  if (isPostgresUrl(database)) {
    const { openPostgresStore } = await import('./postgres/index.js');
    return openPostgresStore(database, clock);
  }
  return openSqliteStore(database, clock);
}
