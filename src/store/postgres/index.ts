import type { Clock } from '../../shared/clock.js';
import type { Store } from '../contract.js';

export async function openPostgresStore(_url: string, _clock: Clock): Promise<Store> {
  throw new Error('PostgreSQL engine: not yet');
}
