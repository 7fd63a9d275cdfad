import type { Clock } from '../../shared/clock.js';
import type { Store } from '../contract.js';
import { SchemaTooNew } from '../shared.js';
import { createPool } from './client.js';
import { migratePostgres } from './migrate.js';
import { createStore } from '../store.js';
import { createPostgresEngine } from './engine.js';
import type { OnConflict } from './retry.js';


/** Connects to the database, applies its migrations (once, however many replicas start together), and returns the store. */
export async function openPostgresStore(url: string, clock: Clock, onConflict?: OnConflict): Promise<Store> {
  const pool = createPool(url);
  try {
    await migratePostgres(pool);
  } catch (error) {
    await pool.end();
    if (error instanceof SchemaTooNew) throw error; // says all there is to say, as on SQLite
    throw new Error(`cannot prepare the PostgreSQL database: ${(error as Error).message}`, { cause: error });
  }
  return createStore(createPostgresEngine(pool, clock, onConflict), clock);
}
