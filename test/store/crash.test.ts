import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { verifyStoredChain } from '../../src/audit/index.js';
import { openStore, type Store } from '../../src/store/index.js';
import { baseConfig, createTestIssuers } from '../helpers/broker.js';
import { createTestDatabase, type TestDatabase } from '../helpers/engine.js';
import { killBroker, startBrokerProcess, until } from '../helpers/process.js';

/**
 * CONTRACT section 5: a token is recorded, durably, before it is returned. With group commit
 * many requests share one commit; a broker killed at any moment must still hold the record of
 * every token it answered (a process kill loses what was not committed, never what was).
 */

let dir: string;
let db: TestDatabase | undefined;
let store: Store | undefined;
afterEach(async () => {
  await store?.close();
  await db?.drop();
  rmSync(dir, { recursive: true, force: true });
});

describe('a broker killed under load', () => {
  it('loses no record of any token it answered', { timeout: 90_000 }, async () => {
    dir = mkdtempSync(join(tmpdir(), 'jit-crash-'));
    db = await createTestDatabase(dir);
    const issuers = await createTestIssuers();
    const config = { ...baseConfig(dir, issuers, db.url), limits: { requestsPerMinute: 1_000_000, liveGrants: 1_000_000 } };
    const broker = await startBrokerProcess(dir, 'broker', config);
    const identity = await issuers.ci.token('repo:acme/app:ref:refs/heads/main', { repository: 'acme/app', actor: 'pat' });

    const answered: string[] = [];
    let stop = false;
    const worker = async () => {
      while (!stop) {
        try {
          const response = await fetch(`${broker.url}/v1/credentials`, {
            method: 'POST',
            headers: { authorization: `Bearer ${identity}`, 'content-type': 'application/json' },
            body: JSON.stringify({ task_id: 'load', scopes: ['artifacts:read'], audience: 'registry.acme.internal' }),
          });
          const body = (await response.json()) as { access_token?: string };
          if (response.status === 201 && body.access_token) answered.push(body.access_token);
        } catch {
          return; // the broker is gone
        }
      }
    };
    const workers = Array.from({ length: 32 }, worker);
    // Enough answers that commits are surely in flight; the machine may be busy with other tests.
    await until(() => answered.length >= 150, 45_000);
    killBroker(broker); // mid-load, every process at once: commits in flight, answers in flight
    await broker.exited;
    stop = true;
    await Promise.all(workers);

    store = await openStore(db.url, Date.now);
    for (const token of answered) {
      const { jti } = decodeJwt(token);
      const issuance = await store.issuances.get(jti as string);
      expect(issuance, `the record of answered token ${jti}`).toBeDefined();
    }
    const events = await store.events.after(0, 1_000_000);
    const issued = new Set(events.filter((e) => e.type === 'token.issued').map((e) => e.data.jti));
    for (const token of answered) expect(issued.has(decodeJwt(token).jti)).toBe(true);
    expect(await verifyStoredChain(store.events)).toMatchObject({ ok: true });
  });
});
