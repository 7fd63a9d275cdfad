import { decodeProtectedHeader } from 'jose';
import { mkdirSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { createPool } from '../../src/store/postgres/client.js';
import { migratePostgres } from '../../src/store/postgres/migrate.js';
import { KEY_VIEW_MAX_AGE_MS } from '../../src/tokens/index.js';
import { bearer, listen, liveClock, startTestBroker, testClock } from '../helpers/broker.js';
import { createTestDatabase, ENGINE, postgresServerUrl, type TestDatabase } from '../helpers/engine.js';
import { tempDir } from '../helpers/temp.js';

/**
 * PostgreSQL that answers nothing (a network partition, a hung host) or refuses what it is asked,
 * and migrations that take long: a request fails with a 503 in bounded time, as the OpenAPI
 * document says, and the replica recovers by itself; a replica waits for another's migrations,
 * and a migration may run longer than a request's statement.
 */

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const undo of cleanup.splice(0).reverse()) await undo().catch(() => {});
});

/** A TCP proxy in front of PostgreSQL that stops passing bytes on `partition` and resets every session on `heal`. */
async function partitionable(target: URL) {
  const sockets = new Set<Socket>();
  let cut = false;
  /** Bytes the broker sent while cut: what it tried to ask. */
  let unheard = 0;
  const server = createServer((client) => {
    sockets.add(client);
    client.on('error', () => {});
    client.on('close', () => sockets.delete(client));
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(upstream);
    upstream.on('error', () => client.destroy());
    upstream.on('close', () => client.destroy());
    client.on('close', () => upstream.destroy());
    client.on('data', (chunk) => (cut ? (unheard += chunk.length) : upstream.write(chunk)));
    upstream.on('data', (chunk) => cut || client.write(chunk));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = new URL(target);
  url.hostname = '127.0.0.1';
  url.port = String((server.address() as { port: number }).port);
  return {
    url: url.toString(),
    partition: () => (cut = true),
    unheard: () => unheard,
    heal() {
      cut = false;
      for (const socket of sockets) socket.destroy();
    },
    close: () => new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    }),
  };
}

describe.runIf(ENGINE === 'postgres')('PostgreSQL that does not answer', () => {
  it('fails a request with a 503 in bounded time, not the minutes TCP takes to give up; then serves again', { timeout: 90_000 }, async () => {
    const dir = tempDir('jit-partition-');
    const real = await createTestDatabase(dir);
    cleanup.push(() => real.drop());
    const proxy = await partitionable(new URL(real.url));
    cleanup.push(() => proxy.close());
    const db: TestDatabase = { ...real, url: proxy.url, drop: async () => {} };
    const t = await startTestBroker({ dir, db, clock: liveClock() });
    cleanup.push(() => t.close());
    const http = await listen(t);
    cleanup.push(() => http.close());
    const ask = async () => {
      const response = await fetch(`${http.url}/v1/credentials`, {
        method: 'POST',
        headers: { ...bearer(await t.as.pipeline()), 'content-type': 'application/json' },
        body: JSON.stringify({ task_id: 'build', scopes: ['artifacts:read'], audience: 'registry.acme.internal' }),
        signal: AbortSignal.timeout(45_000),
      });
      return response.status;
    };
    expect(await ask()).toBe(201);

    proxy.partition(); // the sessions stay open; nothing comes back
    expect(await ask()).toBe(503);
    // Having waited once for an answer that never came, the broker does not make the next
    // request wait again: refused at once, nothing sent to a server it just could not hear from.
    const tried = proxy.unheard();
    expect(await ask()).toBe(503);
    expect(proxy.unheard()).toBe(tried);

    proxy.heal();
    // Within seconds (Retry-After's), it asks PostgreSQL again.
    let status = 0;
    for (let i = 0; i < 40 && status !== 201; i += 1) {
      status = await ask();
      if (status !== 201) await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect(status).toBe(201);
  });
});

describe.runIf(ENGINE === 'postgres')('PostgreSQL that refuses to give the signing keys', () => {
  it('makes introspection and revocation answer 503, never take a live token for one the broker did not mint', async () => {
    const t = await startTestBroker({ clock: testClock() });
    cleanup.push(() => t.close());
    const holder = await t.as.pipeline();
    const introspector = await t.as.pipeline({}, 'resource-server:registry');
    const issued = await t.http.post('/v1/credentials').set(bearer(holder)).send({ task_id: 'build', scopes: ['artifacts:read'], audience: 'registry.acme.internal' });
    const introspect = () => t.http.post('/oauth2/introspect').set(bearer(introspector)).type('form').send({ token: issued.body.access_token });
    const revoke = () => t.http.post('/oauth2/revoke').set(bearer(holder)).type('form').send({ token: issued.body.access_token });

    // The keys read at start grow too old to serve, and the table is renamed behind the broker's back.
    await t.db.sql('ALTER TABLE signing_keys RENAME TO signing_keys_moved');
    cleanup.push(() => t.db.sql('ALTER TABLE IF EXISTS signing_keys_moved RENAME TO signing_keys'));
    t.clock.advance(KEY_VIEW_MAX_AGE_MS);
    // Not {active: false}: the token is live, and a resource server would refuse it for its cache period.
    const unknown = await introspect();
    expect(unknown.status).toBe(503);
    expect(unknown.body.error).toBe('temporarily_unavailable');
    // Not 200: RFC 7009 section 2.2.1, on a 503 the holder must assume the token still exists.
    const unrevoked = await revoke();
    expect(unrevoked.status).toBe(503);
    expect(unrevoked.body.error).toBe('temporarily_unavailable');

    await t.db.sql('ALTER TABLE signing_keys_moved RENAME TO signing_keys');
    expect((await introspect()).body.active).toBe(true);
    expect((await revoke()).status).toBe(200);
    expect((await introspect()).body).toEqual({ active: false });
  });

  it('makes verify?checkpoint answer 503, never call a checkpoint of the broker\'s not one', async () => {
    const t = await startTestBroker({ clock: testClock() });
    cleanup.push(() => t.close());
    const auditor = await t.as.person('ivy', ['auditors']);
    const { checkpoint } = (await t.http.get('/v1/audit/checkpoint').set(bearer(auditor))).body;
    const verify = () => t.http.get(`/v1/audit/verify?checkpoint=${checkpoint}`).set(bearer(auditor));

    await t.db.sql('ALTER TABLE signing_keys RENAME TO signing_keys_moved');
    cleanup.push(() => t.db.sql('ALTER TABLE IF EXISTS signing_keys_moved RENAME TO signing_keys'));
    const unknown = await verify();
    expect(unknown.status).toBe(503);
    expect(unknown.body.type).toBe('urn:jit-broker:problem:unavailable');

    await t.db.sql('ALTER TABLE signing_keys_moved RENAME TO signing_keys');
    expect((await verify()).body).toMatchObject({ ok: true });
  });
});

describe.runIf(ENGINE === 'postgres')('PostgreSQL that refuses a read', () => {
  it('answers 503, as the OpenAPI document says, on reads too: a listing, a request, introspection, the audit log, the keys; then serves again', async () => {
    const t = await startTestBroker({ clock: testClock() });
    cleanup.push(() => t.close());
    const doc = (await t.http.get('/openapi.json')).body;
    const pipeline = await t.as.pipeline();
    const issued = await t.http.post('/v1/credentials').set(bearer(pipeline)).send({ task_id: 'build', scopes: ['artifacts:read'], audience: 'registry.acme.internal' });
    expect(issued.status).toBe(201);
    const reads = async () => {
      const pipeline = await t.as.pipeline();
      const introspector = await t.as.pipeline({}, 'resource-server:registry');
      const auditor = await t.as.person('ivy', ['auditors']);
      return [
        ['get', '/v1/credentials', await t.http.get('/v1/credentials').set(bearer(pipeline))],
        ['get', '/v1/credentials/{id}', await t.http.get(`/v1/credentials/${issued.body.request_id}`).set(bearer(pipeline))],
        ['post', '/oauth2/introspect', await t.http.post('/oauth2/introspect').set(bearer(introspector)).type('form').send({ token: issued.body.access_token })],
        ['get', '/v1/audit/events', await t.http.get('/v1/audit/events').set(bearer(auditor))],
        ['get', '/.well-known/jwks.json', await t.http.get('/.well-known/jwks.json')],
      ] as const;
    };
    // Every table these read is renamed behind the broker's back: each statement is refused at once.
    const tables = ['requests', 'issuances', 'audit_events', 'signing_keys'];
    for (const table of tables) await t.db.sql(`ALTER TABLE ${table} RENAME TO ${table}_moved`);
    const restore = async () => {
      for (const table of tables) await t.db.sql(`ALTER TABLE IF EXISTS ${table}_moved RENAME TO ${table}`);
    };
    cleanup.push(restore);
    // The keys read at start are too old to serve, even to the JWKS, which serves them for
    // publishAhead (10 minutes) after reading them (see the test below).
    t.clock.advance(t.config.signing.publishAhead);
    for (const [method, path, response] of await reads()) {
      expect(response.status, path).toBe(503);
      const documented = doc.paths[path][method].responses['503']?.content ?? {};
      expect(Object.keys(documented), path).toContain((response.headers['content-type'] ?? '').split(';')[0]);
      expect(response.body.type ?? response.body.error, path).toMatch(/unavailable$/);
    }
    await restore();
    for (const [, path, response] of await reads()) expect(response.status, path).toBe(200);
  });
});

describe.runIf(ENGINE === 'postgres')('PostgreSQL that does not answer for the keys', () => {
  it('leaves the JWKS serving the keys read last, for publishAhead after that read, cached no longer than it lasts; then 503', async () => {
    const t = await startTestBroker({ clock: testClock() });
    cleanup.push(() => t.close());
    const issued = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ task_id: 'build', scopes: ['artifacts:read'], audience: 'registry.acme.internal' });
    const before = await t.http.get('/.well-known/jwks.json');
    expect(before.headers['cache-control']).toBe('public, max-age=300');
    const readAt = t.clock();
    await t.db.sql('ALTER TABLE signing_keys RENAME TO signing_keys_moved');
    cleanup.push(() => t.db.sql('ALTER TABLE IF EXISTS signing_keys_moved RENAME TO signing_keys'));
    const publishAhead = t.config.signing.publishAhead;

    // Any key added since that read signs no sooner than publishAhead after it: these verify every token.
    t.clock.set(readAt + KEY_VIEW_MAX_AGE_MS);
    const stale = await t.http.get('/.well-known/jwks.json');
    expect(stale.status).toBe(200);
    expect(stale.body).toEqual(before.body);
    expect(stale.body.keys.map((k: { kid: string }) => k.kid)).toContain(decodeProtectedHeader(issued.body.access_token).kid);
    // Near its end, a cache may keep them only until then.
    t.clock.set(readAt + publishAhead - 42_500);
    expect((await t.http.get('/.well-known/jwks.json')).headers['cache-control']).toBe('public, max-age=42');
    expect((await t.http.get('/.well-known/oauth-authorization-server')).status).toBe(200);
    t.clock.set(readAt + publishAhead);
    expect((await t.http.get('/.well-known/jwks.json')).status).toBe(503);

    await t.db.sql('ALTER TABLE signing_keys_moved RENAME TO signing_keys');
    expect((await t.http.get('/.well-known/jwks.json')).headers['cache-control']).toBe('public, max-age=300');
  });
});

describe.runIf(ENGINE === 'postgres')('migrations', () => {
  it('run without a request\'s lock and statement timeouts: a replica waits for another\'s, one may take long', { timeout: 60_000 }, async () => {
    const dir = tempDir('jit-migration-lock-');
    const db = await createTestDatabase(dir);
    cleanup.push(() => db.drop());
    // Another replica migrates for 6 s, past the 5 s a request waits for a lock.
    const holder = new pg.Client({ connectionString: db.url });
    await holder.connect();
    cleanup.push(() => holder.end());
    await holder.query('SELECT pg_advisory_lock(7596286014052352341)');
    setTimeout(() => void holder.query('SELECT pg_advisory_unlock(7596286014052352341)'), 6_000);
    const t = await startTestBroker({ dir, db, clock: testClock() });
    cleanup.push(() => t.close());
    expect((await t.http.get('/readyz')).status).toBe(200);

    // What a migration's statements run under: no deadline of a request's.
    const files = join(tempDir('jit-migration-settings-'), 'postgres');
    mkdirSync(files);
    writeFileSync(join(files, '001_settings.sql'), "CREATE TABLE seen AS SELECT current_setting('statement_timeout') AS statement_timeout, current_setting('lock_timeout') AS lock_timeout;");
    const admin = new pg.Client({ connectionString: postgresServerUrl() });
    await admin.connect();
    const name = `jit_migration_settings_${process.pid}_${Date.now()}`;
    await admin.query(`CREATE DATABASE ${name}`);
    cleanup.push(async () => {
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
    });
    const empty = new URL(postgresServerUrl());
    empty.pathname = `/${name}`;
    const pool = createPool(empty.toString());
    cleanup.push(() => pool.end());
    expect(await migratePostgres(pool, files)).toEqual([1]);
    expect(await pool.query('SELECT statement_timeout, lock_timeout FROM seen')).toEqual([{ statement_timeout: '0', lock_timeout: '0' }]);
    // And the pool's next session has a request's deadlines again.
    expect(await pool.query("SELECT current_setting('statement_timeout') AS s")).toEqual([{ s: '15s' }]);
  });
});

describe.runIf(ENGINE === 'postgres')('a database URL with options of its own', () => {
  it('keeps the deadlines a request runs under: the URL\'s options come first, the broker\'s after them', async () => {
    const url = new URL(postgresServerUrl());
    url.searchParams.set('options', '-c lock_timeout=0 -c application_name=ops-tool -c search_path=public');
    const pool = createPool(url.toString());
    cleanup.push(() => pool.end());
    expect(await pool.query("SELECT current_setting('lock_timeout') AS l, current_setting('statement_timeout') AS s, current_setting('search_path') AS p")).toEqual([
      { l: '5s', s: '15s', p: 'public' },
    ]);
  });
});
