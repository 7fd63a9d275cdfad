import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify, type JSONWebKeySet } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config/index.js';
import { KEY_VIEW_MAX_AGE_MS, openSealedKey, parseKeyEncryptionKeys, RETIRE_GRACE_MS, SIGNING_SLACK_MS, type KeyEncryptionKeys } from '../../src/tokens/index.js';
import {
  BROKER_ISSUER,
  bearer,
  startTestBroker,
  testClock,
  TEST_KEY_ENCRYPTION_KEY,
  writeKeyEncryptionKeyFile,
  type TestBroker,
} from '../helpers/broker.js';
import { ENGINE } from '../helpers/engine.js';
import { allEvents } from '../helpers/records.js';
import { tempDir } from '../helpers/temp.js';

/**
 * CONTRACT section 5 with the signing keys in the store (a key-encryption key given): brokers on
 * one database sign with the cluster's key, so one that joins is ready at once; each serves every
 * key whatever `scheduler.interval` is (here an hour, longer than publishAhead), rotation and
 * retirement run once for all; the database never holds a private key in clear, and a broker
 * given the wrong key-encryption key never starts.
 */

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const body = { task_id: 'build-1', scopes: ['artifacts:read'], audience: 'registry.acme.internal', ttl_seconds: 900 };
const keks = parseKeyEncryptionKeys(TEST_KEY_ENCRYPTION_KEY) as KeyEncryptionKeys;

const clock = testClock();
let a: TestBroker;
let b: TestBroker;
let kekFile: string;

/** A broker on a's database, in a directory of its own (its own keyDir), given `configure`'s signing. */
const replica = (signing: Record<string, unknown> = {}) =>
  startTestBroker({
    clock,
    issuers: a.issuers,
    db: a.db,
    dir: tempDir('jit-cluster-replica-'),
    configure: (c) => {
      c.scheduler = { interval: '60m' };
      c.signing = { ...(c.signing as object), keyEncryptionKeyFile: kekFile, ...signing };
    },
  });

beforeAll(async () => {
  const dir = tempDir('jit-cluster-');
  kekFile = writeKeyEncryptionKeyFile(dir);
  a = await startTestBroker({
    clock,
    dir,
    configure: (c) => {
      c.scheduler = { interval: '60m' };
      c.signing = { ...(c.signing as object), keyEncryptionKeyFile: kekFile };
    },
  });
  b = await replica();
});
afterAll(async () => {
  await b?.close();
  await a?.close();
});

const issue = async (t: TestBroker) => {
  const response = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send(body);
  expect(response.status, JSON.stringify(response.body)).toBe(201);
  return response.body.access_token as string;
};
const jwks = async (t: TestBroker) => (await t.http.get('/.well-known/jwks.json')).body as JSONWebKeySet;
const kidOf = (token: string) => decodeProtectedHeader(token).kid as string;
const verifies = (token: string, keys: JSONWebKeySet) =>
  jwtVerify(token, createLocalJWKSet(keys), { issuer: BROKER_ISSUER, currentDate: new Date(clock()) }).then(
    () => true,
    () => false,
  );
const keyRows = () => a.db.sql<{ kid: string; alg: string; public_jwk: string; sealed_private_key: string | null; retired_at: number | null }>('SELECT * FROM signing_keys');
const introspect = async (t: TestBroker, token: string) =>
  (await t.http.post('/oauth2/introspect').set(bearer(await t.as.pipeline({}, 'resource-server:registry'))).type('form').send({ token })).body as { active: boolean };

describe(`brokers sharing signing keys kept in the ${ENGINE} store`, () => {
  it('let one that joins sign at once with the cluster\'s key, never waiting publishAhead for one of its own', async () => {
    expect((await b.http.get('/readyz')).status).toBe(200);
    const [fromA, fromB] = [await issue(a), await issue(b)];
    expect(kidOf(fromB)).toBe(kidOf(fromA));
    expect((await jwks(b)).keys.map((key) => key.kid)).toEqual([kidOf(fromA)]);
    // Nothing written to either key directory: the private half is in the store, sealed.
    for (const t of [a, b]) expect(readdirSync(t.dir)).not.toContain('keys');
  });

  it('keep no private key in clear in the database: only AES-256-GCM ciphertext under the key-encryption key', async () => {
    const rows = await keyRows();
    expect(rows.length).toBeGreaterThan(0);
    const contents = await a.db.contents();
    const logs = [...a.logs, ...b.logs].join('\n');
    expect(contents).not.toContain('"d":');
    for (const text of [contents, logs]) expect(text).not.toContain(TEST_KEY_ENCRYPTION_KEY);
    for (const row of rows.filter((r) => r.sealed_private_key !== null)) {
      expect(row.sealed_private_key).toMatch(new RegExp(`^v1\\.${keks[0].id}\\.`));
      const { d } = openSealedKey(keks, row.sealed_private_key as string, { kid: row.kid, alg: row.alg, publicJwk: JSON.parse(row.public_jwk) }).export({ format: 'jwk' });
      expect(d).toBeTruthy();
      for (const text of [contents, logs]) expect(text).not.toContain(d);
    }
  });

  it('verify each other\'s tokens across a rotation that one of them runs, with a scheduler interval longer than publishAhead', async () => {
    const start = clock();
    const firstKid = kidOf(await issue(a));

    // The last hourly run that is still publishAhead (10m) ahead of the key's 24 hours publishes the next one.
    clock.set(start + 24 * HOUR - 70 * MINUTE - 1_000);
    await a.broker.scheduler.runAll();
    expect((await jwks(a)).keys).toHaveLength(1);
    clock.set(start + 24 * HOUR - 70 * MINUTE);
    await a.broker.scheduler.runAll();
    const [nextKid] = (await jwks(a)).keys.map((key) => key.kid);
    expect(nextKid).not.toBe(firstKid);

    // b runs nothing, yet serves the new key within seconds.
    clock.advance(KEY_VIEW_MAX_AGE_MS);
    expect((await jwks(b)).keys.map((key) => key.kid)).toEqual([nextKid, firstKid]);

    // Resource servers cache either JWKS a moment before the key's time; until then neither signs with it.
    clock.set(start + 24 * HOUR - 1_000);
    const [cachedFromA, cachedFromB] = [await jwks(a), await jwks(b)];
    const before = [await issue(a), await issue(b)];
    expect(before.map(kidOf)).toEqual([firstKid, firstKid]);

    // From the key's time on, both sign with it, and those cached copies verify every token.
    clock.set(start + 24 * HOUR);
    const after = [await issue(a), await issue(b)];
    expect(after.map(kidOf)).toEqual([nextKid, nextKid]);
    for (const token of [...before, ...after]) {
      expect(await verifies(token, cachedFromB)).toBe(true);
      expect(await verifies(token, cachedFromA)).toBe(true);
      expect(await verifies(token, await jwks(b))).toBe(true);
    }
    // Introspection (the broker's own token check) on either knows the other's tokens.
    for (const token of after) {
      expect((await introspect(a, token)).active).toBe(true);
      expect((await introspect(b, token)).active).toBe(true);
    }
    expect((await allEvents(a)).filter((e) => e.type === 'key.rotated')).toHaveLength(2); // the first key, and this one: once for the cluster

    // Once its tokens have expired, the old key is retired, its sealed half erased, and gone from every JWKS.
    clock.set(start + 24 * HOUR + SIGNING_SLACK_MS + RETIRE_GRACE_MS + 15 * MINUTE);
    await b.broker.scheduler.runAll();
    const rows = await keyRows();
    expect(rows.find((row) => row.kid === firstKid)).toMatchObject({ sealed_private_key: null, retired_at: expect.anything() }) // BIGINT reads as text on PostgreSQL;
    expect(rows.find((row) => row.kid === nextKid)?.sealed_private_key).toBeTruthy();
    clock.advance(KEY_VIEW_MAX_AGE_MS);
    for (const t of [a, b]) expect((await jwks(t)).keys.map((key) => key.kid)).toEqual([nextKid]);
  });

  it('refuse a broker given the wrong key-encryption key: GCM authentication fails, it never starts and adds no key', async () => {
    const wrongKey = randomBytes(32).toString('base64');
    const wrong = writeKeyEncryptionKeyFile(tempDir('jit-cluster-wrong-'), wrongKey);
    const keysBefore = await keyRows();
    const error = await replica({ keyEncryptionKeyFile: wrong }).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(error).toMatchObject({ code: 'ERR_KEK_MISMATCH', name: 'KeyEncryptionKeyMismatch' });
    expect((error as Error).message).toMatch(/^signing key \S+ in the store cannot be opened: AES-256-GCM authentication failed/);
    expect((error as Error).message).not.toContain(wrongKey);
    expect(await keyRows()).toEqual(keysBefore);
    // Nor does it record its start: it never started.
    expect((await allEvents(a)).filter((event) => event.type === 'config.loaded')).toHaveLength(2);
  });

  it('refuse a row whose public half was swapped for another key: it is neither published nor signed with', async () => {
    const [row] = (await keyRows()).filter((r) => r.retired_at === null);
    // Whoever writes the database puts their own public key on the row whose sealed half opens.
    const intruder = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
    await a.db.sql('UPDATE signing_keys SET public_jwk = ? WHERE kid = ?', [JSON.stringify(intruder), row?.kid]);
    try {
      clock.advance(KEY_VIEW_MAX_AGE_MS);
      expect((await jwks(b)).keys).toEqual([]);
      expect((await b.http.post('/v1/credentials').set(bearer(await b.as.pipeline())).send(body)).status).toBe(503);
      expect(b.logs.some((line) => line.includes('ERR_SEALED_KEY_UNREADABLE'))).toBe(true);
    } finally {
      await a.db.sql('UPDATE signing_keys SET public_jwk = ? WHERE kid = ?', [row?.public_jwk, row?.kid]);
      clock.advance(KEY_VIEW_MAX_AGE_MS);
    }
    expect((await b.http.get('/readyz')).status).toBe(200);
  });

  it('are not ready while a key of the cluster does not open here, though they still sign with one that does', async () => {
    const [row] = (await keyRows()).filter((r) => r.retired_at === null);
    // A next key sealed under a key-encryption key this replica lacks (here: bound to another kid, so it cannot open).
    await a.db.sql(
      `INSERT INTO signing_keys (kid, alg, public_jwk, created_at, activates_at, retired_at, sealed_private_key)
       SELECT 'next-elsewhere', alg, public_jwk, created_at, activates_at + 3600000, NULL, sealed_private_key FROM signing_keys WHERE kid = ?`,
      [row?.kid],
    );
    try {
      clock.advance(KEY_VIEW_MAX_AGE_MS);
      expect((await b.http.get('/readyz')).status).toBe(503);
      await issue(b);
    } finally {
      await a.db.sql(`DELETE FROM signing_keys WHERE kid = 'next-elsewhere'`);
      clock.advance(KEY_VIEW_MAX_AGE_MS);
    }
    expect((await b.http.get('/readyz')).status).toBe(200);
  });

  it('publish only the members that make the key: members a database writer adds to a row (x5c, x5u, key_ops) reach no JWKS', async () => {
    const [row] = (await keyRows()).filter((r) => r.retired_at === null);
    const added = { ...JSON.parse(row?.public_jwk as string), x5u: 'https://attacker.example/cert.pem', x5c: ['MIIB'], key_ops: ['encrypt'] };
    await a.db.sql('UPDATE signing_keys SET public_jwk = ? WHERE kid = ?', [JSON.stringify(added), row?.kid]);
    try {
      clock.advance(KEY_VIEW_MAX_AGE_MS);
      const published = (await jwks(b)).keys.find((key) => key.kid === row?.kid);
      expect(Object.keys(published ?? {}).sort()).toEqual(['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
      expect(await verifies(await issue(b), await jwks(b))).toBe(true);
    } finally {
      await a.db.sql('UPDATE signing_keys SET public_jwk = ? WHERE kid = ?', [row?.public_jwk, row?.kid]);
      clock.advance(KEY_VIEW_MAX_AGE_MS);
    }
  });

  it.runIf(ENGINE === 'postgres')('on PostgreSQL, refuse to start without a key-encryption key', async () => {
    const error = await replica({ keyEncryptionKeyFile: undefined }).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).problems).toEqual([expect.stringMatching(/^signing: PostgreSQL needs a key-encryption key/)]);
  });
});

describe.runIf(ENGINE === 'sqlite')('an upgrade from key files to keys in the store', () => {
  it('seals the key a key file held into the store, which keeps signing with it at once', async () => {
    const t = await startTestBroker(); // no key-encryption key: key files
    try {
      const kid = kidOf(await issue(t));
      expect(readdirSync(join(t.dir, 'keys'))).toEqual([`${kid}.jwk.json`]);
      await t.restart((c) => ((c.signing as Record<string, unknown>).keyEncryptionKeyFile = writeKeyEncryptionKeyFile(t.dir)));
      expect(kidOf(await issue(t))).toBe(kid);
      const [row] = await t.db.sql<{ sealed_private_key: string | null }>('SELECT sealed_private_key FROM signing_keys WHERE kid = ?', [kid]);
      expect(row?.sealed_private_key).toMatch(/^v1\./);
      expect((await allEvents(t)).filter((e) => e.type === 'key.sealed').map((e) => e.data)).toEqual([{ kid, alg: 'ES256', key_encryption_key: keks[0].id }]);
      // A second broker without the key file signs with it too.
      const second = await startTestBroker({
        clock: t.clock,
        issuers: t.issuers,
        db: t.db,
        dir: tempDir('jit-upgrade-'),
        configure: (c) => ((c.signing as Record<string, unknown>).keyEncryptionKeyFile = join(t.dir, 'key-encryption.key')),
      });
      try {
        expect(kidOf(await issue(second))).toBe(kid);
      } finally {
        await second.close();
      }
    } finally {
      await t.close();
    }
  });
});

describe(`a kid that a writer of the ${ENGINE} store puts on a row`, () => {
  it('never names a file outside keyDir: that key file is not sealed in, published or signed with, nor removed when the row retires', async () => {
    const own = testClock();
    const dirA = tempDir('jit-kid-path-a-');
    const kekFile = writeKeyEncryptionKeyFile(dirA);
    const configure = (c: Record<string, unknown>) => {
      c.scheduler = { interval: '60m' };
      c.signing = { ...(c.signing as object), keyEncryptionKeyFile: kekFile };
    };
    const t = await startTestBroker({ clock: own, dir: dirA, configure });
    // A private key file the broker's user owns elsewhere on the machine (another broker's key
    // directory, say), whose public half is no secret.
    const elsewhere = tempDir('jit-kid-path-elsewhere-');
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const theirs = join(elsewhere, 'theirs.jwk.json');
    writeFileSync(theirs, JSON.stringify(privateKey.export({ format: 'jwk' })), { mode: 0o600 });
    const dirB = tempDir('jit-kid-path-b-');
    const kid = relative(join(dirB, 'keys'), join(elsewhere, 'theirs'));
    expect(kid).toMatch(/^\.\.\//);
    // The newest key that may sign, without a sealed half: one whose key file a replica would seal in at start.
    await t.db.sql('INSERT INTO signing_keys (kid, alg, public_jwk, created_at, activates_at, retired_at, sealed_private_key) VALUES (?, ?, ?, ?, ?, NULL, NULL)', [
      kid,
      'ES256',
      JSON.stringify(publicKey.export({ format: 'jwk' })),
      own(),
      own(),
    ]);
    const b = await startTestBroker({ clock: own, issuers: t.issuers, db: t.db, dir: dirB, configure });
    try {
      const [row] = await t.db.sql<{ sealed_private_key: string | null }>('SELECT sealed_private_key FROM signing_keys WHERE kid = ?', [kid]);
      expect(row?.sealed_private_key).toBeNull();
      for (const broker of [b, t]) {
        expect((await jwks(broker)).keys.map((key) => key.kid)).not.toContain(kid);
        expect(kidOf(await issue(broker))).not.toBe(kid);
      }
      // Long superseded: retired, and the file its kid points at stays where it is.
      const old = own() - 3 * 24 * HOUR;
      await t.db.sql('UPDATE signing_keys SET created_at = ?, activates_at = ? WHERE kid = ?', [old, old, kid]);
      own.advance(RETIRE_GRACE_MS + KEY_VIEW_MAX_AGE_MS);
      await b.broker.scheduler.runAll();
      const [retired] = await t.db.sql<{ retired_at: number | null }>('SELECT retired_at FROM signing_keys WHERE kid = ?', [kid]);
      expect(retired?.retired_at).not.toBeNull();
      expect(existsSync(theirs)).toBe(true);
    } finally {
      await b.close();
      await t.close();
    }
  });
});

describe(`a replica that cannot open the ${ENGINE} cluster's newest key`, () => {
  it('adds no key of its own when its rotation is due: it would sign ahead of the others, under the old key-encryption key', async () => {
    const own = testClock();
    const OLD = randomBytes(32).toString('base64');
    const NEW = randomBytes(32).toString('base64');
    const configure = (file: string) => (c: Record<string, unknown>) => {
      c.scheduler = { interval: '60m' };
      c.signing = { ...(c.signing as object), keyEncryptionKeyFile: file };
    };
    const dirB = tempDir('jit-kek-rotation-b-');
    const b = await startTestBroker({ clock: own, dir: dirB, configure: configure(writeKeyEncryptionKeyFile(dirB, OLD, 'old.key')) });
    const dirA = tempDir('jit-kek-rotation-a-');
    // a was given NEW before b: the key-encryption key rotation's first step, which b missed.
    const a = await startTestBroker({ clock: own, issuers: b.issuers, db: b.db, dir: dirA, configure: configure(writeKeyEncryptionKeyFile(dirA, `${NEW},${OLD}`, 'new-old.key')) });
    try {
      own.advance(24 * 3_600_000 - 30 * 60_000);
      await a.broker.scheduler.runAll(); // the next key, sealed under NEW
      own.advance(KEY_VIEW_MAX_AGE_MS);
      expect((await b.http.get('/readyz')).status).toBe(503);
      await b.broker.scheduler.runAll(); // b's own rotation is due too
      const rows = await b.db.sql<{ sealed_private_key: string }>('SELECT sealed_private_key FROM signing_keys WHERE retired_at IS NULL');
      expect(rows).toHaveLength(2);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
