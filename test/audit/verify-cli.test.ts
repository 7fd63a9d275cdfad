import { createHash } from 'node:crypto';
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { bearer, listen, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { runCli } from '../helpers/cli.js';
import { ENGINE } from '../helpers/engine.js';

/** `jit audit verify --checkpoint`: online through the broker, and offline on the database file itself. */

let t: TestBroker;
let files: string;
beforeEach(async () => {
  t = await startTestBroker();
  files = mkdtempSync(join(tmpdir(), 'jit-checkpoints-'));
  for (let i = 0; i < 3; i += 1) await issue(`t${i}`);
});
afterEach(async () => {
  await t.close();
  rmSync(files, { recursive: true, force: true });
});

const issue = async (task: string) =>
  expect((await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ task_id: task, scopes: ['artifacts:read'], audience: 'x' })).status).toBe(201);
const auditor = () => t.as.person('ivy', ['auditors']);
/** The checkpoint as an auditor keeps it: the JSON the broker answered, in a file of their own. */
const keepCheckpoint = async (name = 'checkpoint.json') => {
  const response = await t.http.get('/v1/audit/checkpoint').set(bearer(await auditor()));
  const file = join(files, name);
  writeFileSync(file, JSON.stringify(response.body));
  return { file, ...(response.body as { seq: number; hash: string; checkpoint: string }) };
};
const truncate = async (fromSeq: number) => {
  await t.db.unguardAuditLog();
  await t.db.sql('DELETE FROM audit_events WHERE seq >= ?', [fromSeq]);
};
/** The broker's JWKS as an auditor keeps it with the checkpoint: the keys it trusts, from outside the database. */
const keepJwks = async (name = 'jwks.json') => {
  const file = join(files, name);
  writeFileSync(file, JSON.stringify((await t.http.get('/.well-known/jwks.json')).body));
  return file;
};
/** The intruder's own key, and a checkpoint of `head` signed with it under `kid`, as the broker would sign one. */
const intruderKey = async () => {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  return {
    publicJwk: JSON.stringify(await exportJWK(publicKey)),
    sign: (kid: string, head: { seq: number; hash: string }) =>
      new SignJWT(head).setProtectedHeader({ alg: 'ES256', kid, typ: 'checkpoint+jwt' }).setIssuer(t.config.issuer).setIssuedAt().sign(privateKey),
  };
};
/** A JWKS served over plain HTTP on loopback, as any web server would serve a saved file. */
const serve = async (body: string | Buffer, status = 200, headers: Record<string, string> = {}) => {
  const server = createServer((_req, res) => res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(body));
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`,
    close: () => new Promise<void>((done) => (server.closeAllConnections(), server.close(() => done()))),
  };
};

describe('jit audit verify --checkpoint, through the broker', () => {
  it('says ok while the chain holds the head, TRUNCATED (65) once it does not', async () => {
    const server = await listen(t);
    try {
      const env = { BROKER_URL: server.url, BROKER_IDENTITY_TOKEN: await auditor() };
      const cp = await keepCheckpoint();
      await issue('after');
      const ok = await runCli(['audit', 'verify', '--checkpoint', cp.file], env);
      expect(ok).toMatchObject({ code: 0, stderr: '' });
      expect(ok.stdout).toMatch(new RegExp(`^ok: \\d+ events, head [0-9a-f]{64}, holding the checkpoint's head \\(seq ${cp.seq}\\)\\n$`));
      // The bare JWS works too, from stdin.
      expect((await runCli(['audit', 'verify', '--checkpoint', '-'], env, { stdin: cp.checkpoint })).code).toBe(0);

      await truncate(cp.seq);
      const truncated = await runCli(['audit', 'verify', '--checkpoint', cp.file, '--json'], env);
      expect(truncated.code).toBe(65);
      expect(JSON.parse(truncated.stdout)).toEqual({ ok: false, reason: 'truncated', trust: 'broker' });
      // Without the checkpoint the shortened chain looks whole: that is what checkpoints are for.
      expect((await runCli(['audit', 'verify'], env)).code).toBe(0);
    } finally {
      await server.close();
    }
  });

  it('cannot read (66) a missing or empty checkpoint file; refuses (1) a checkpoint the broker did not sign', async () => {
    const env = { BROKER_URL: 'http://127.0.0.1:9', BROKER_IDENTITY_TOKEN: await auditor() };
    const missing = await runCli(['audit', 'verify', '--checkpoint', join(files, 'nope.json')], env);
    expect(missing).toMatchObject({ code: 66, stdout: '' });
    expect(missing.stderr).toMatch(/cannot read .*nope\.json: ENOENT/);
    writeFileSync(join(files, 'empty.json'), '{"seq": 3}');
    expect((await runCli(['audit', 'verify', '--checkpoint', join(files, 'empty.json')], env)).code).toBe(66);

    const server = await listen(t);
    try {
      const forged = (await keepCheckpoint()).checkpoint.replace(/\.[^.]+$/, '.AAAA');
      const refused = await runCli(['audit', 'verify', '--checkpoint', '-'], { ...env, BROKER_URL: server.url }, { stdin: forged });
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/invalid_request: The checkpoint does not verify/);
    } finally {
      await server.close();
    }
  });

  it('with --jwks, refuses (1) a checkpoint the broker accepts only because its database holds the intruder\'s key', async () => {
    const server = await listen(t);
    try {
      const env = { BROKER_URL: server.url, BROKER_IDENTITY_TOKEN: await auditor() };
      const cp = await keepCheckpoint();
      const jwks = await keepJwks();
      const genuine = await runCli(['audit', 'verify', '--checkpoint', cp.file, '--jwks', jwks, '--json'], env);
      expect(genuine).toMatchObject({ code: 0, stderr: '' });
      expect(JSON.parse(genuine.stdout)).toMatchObject({ ok: true, trust: 'jwks' });

      // Whoever can write the database adds a key of their own (retired, so the broker never signs with it) and signs a head with it.
      const intruder = await intruderKey();
      await t.db.sql('INSERT INTO signing_keys (kid, alg, public_jwk, created_at, activates_at, retired_at) VALUES (?, ?, ?, ?, ?, ?)', [
        'intruder', 'ES256', intruder.publicJwk, t.clock(), t.clock(), t.clock(),
      ]);
      const forged = await intruder.sign('intruder', { seq: cp.seq, hash: cp.hash });
      // The broker judges by the keys in its database: it takes the forgery.
      const trusting = await runCli(['audit', 'verify', '--checkpoint', '-', '--json'], env, { stdin: forged });
      expect(trusting.code).toBe(0);
      expect(JSON.parse(trusting.stdout)).toMatchObject({ ok: true, trust: 'broker' });
      // The JWKS kept from before does not hold that key.
      const refused = await runCli(['audit', 'verify', '--checkpoint', '-', '--jwks', jwks], env, { stdin: forged });
      expect(refused).toMatchObject({ code: 1, stdout: '' });
      expect(refused.stderr).toMatch(/the checkpoint is not a checkpoint\+jwt signed by one of the keys in .*jwks\.json/);
    } finally {
      await server.close();
    }
  });

  it('--jwks needs a checkpoint to check; it takes a JWKS file or an https URL (http only to this machine)', async () => {
    const env = { BROKER_URL: 'http://127.0.0.1:9', BROKER_IDENTITY_TOKEN: await auditor() };
    const jwks = await keepJwks();
    const alone = await runCli(['audit', 'verify', '--jwks', jwks], env);
    expect(alone.code).toBe(2);
    expect(alone.stderr).toMatch(/--jwks .* --checkpoint/);
    const cp = await keepCheckpoint();
    for (const url of ['http://broker.example.com/.well-known/jwks.json', 'ftp://127.0.0.1/jwks.json', 'file:///etc/passwd']) {
      const result = await runCli(['audit', 'verify', '--checkpoint', cp.file, '--jwks', url], env);
      expect(result.code, url).toBe(2);
      expect(result.stderr, url).toMatch(/--jwks .*https/);
    }
  });
});

describe.runIf(ENGINE === 'sqlite')('jit audit verify --db FILE --checkpoint, offline', () => {
  const digest = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');
  /** Everything beside the evidence, with each file's bytes and times: the offline check must change none of it. */
  const beside = (file: string) => {
    const dir = join(file, '..');
    return readdirSync(dir)
      .sort()
      .map((name) => {
        const path = join(dir, name);
        const stat = statSync(path);
        return stat.isFile() ? `${name} ${stat.size} ${stat.mtimeMs} ${digest(path)}` : name;
      });
  };

  it('reads the events still in the -wal of a database in use, and writes nothing beside it', async () => {
    // The broker checkpoints its WAL every second, which would change the file and the -shm while
    // the check runs. A reader that began on an empty WAL holds back every checkpoint until it
    // ends (it reads the file alone), so the events issued meanwhile stay in the -wal alone.
    const reader = new Database(t.db.url, { fileMustExist: true });
    try {
      reader.pragma('wal_checkpoint(TRUNCATE)');
      reader.exec('BEGIN');
      reader.prepare('SELECT count(*) FROM audit_events').get();
      await issue('in the wal');
      const cp = await keepCheckpoint();
      const jwks = await keepJwks();
      // A checkpoint now moves nothing into the file; it leaves the -shm as the broker's will find it.
      const other = new Database(t.db.url, { fileMustExist: true });
      const [moved] = other.pragma('wal_checkpoint(PASSIVE)') as { log: number; checkpointed: number }[];
      expect(moved?.log).toBeGreaterThan(0);
      expect(moved?.checkpointed).toBe(0);
      other.close();
      const before = beside(t.db.url);
      const result = await runCli(['audit', 'verify', '--db', t.db.url, '--checkpoint', cp.file, '--jwks', jwks]);
      expect(result).toMatchObject({ code: 0, stderr: '' });
      expect(result.stdout).toContain(`holding the checkpoint's head (seq ${cp.seq})`);
      expect(beside(t.db.url)).toEqual(before);
    } finally {
      reader.close();
    }
  });

  it('verifies a copy of the file alone, with no -wal, creating none', async () => {
    const cp = await keepCheckpoint();
    const jwks = await keepJwks();
    await t.broker.close(); // folds the WAL into the file
    const evidence = mkdtempSync(join(tmpdir(), 'jit-evidence-'));
    try {
      const copy = join(evidence, 'broker.db');
      copyFileSync(t.db.url, copy);
      const result = await runCli(['audit', 'verify', '--db', copy, '--checkpoint', cp.file, '--jwks', jwks]);
      expect(result).toMatchObject({ code: 0, stderr: '' });
      expect(readdirSync(evidence)).toEqual(['broker.db']);
    } finally {
      rmSync(evidence, { recursive: true, force: true });
      await t.restart();
    }
  });

  it('reports a table truncated behind the broker\'s back as TRUNCATED, exit 65', async () => {
    const cp = await keepCheckpoint();
    const jwks = await keepJwks();
    await issue('after');
    await t.broker.close();
    await truncate(cp.seq - 1);
    const before = beside(t.db.url);
    const result = await runCli(['audit', 'verify', '--db', t.db.url, '--checkpoint', cp.file, '--jwks', jwks]);
    expect(result).toEqual({ code: 65, stdout: `TRUNCATED: the chain no longer holds the checkpoint's head (seq ${cp.seq})\n`, stderr: '' });
    expect(beside(t.db.url)).toEqual(before);
    // Without the checkpoint, the chain that is left verifies.
    expect((await runCli(['audit', 'verify', '--db', t.db.url])).code).toBe(0);
    await t.restart();
    const online = await t.http.get('/v1/audit/verify').query({ checkpoint: cp.checkpoint }).set(bearer(await auditor()));
    expect(online.body).toEqual({ ok: false, reason: 'truncated' });
  });

  it('answers 66 for a file it cannot read as a broker database, and 1 for a checkpoint none of its keys signed', async () => {
    const cp = await keepCheckpoint();
    const junk = join(files, 'junk.db');
    writeFileSync(junk, 'not a database at all, just bytes '.repeat(200));
    for (const file of [join(files, 'missing.db'), junk, files]) {
      const result = await runCli(['audit', 'verify', '--db', file]);
      expect(result.code, file).toBe(66);
      expect(result.stdout).toBe('');
    }
    // Another broker's database does not hold the key that signed this checkpoint.
    const other = await startTestBroker();
    try {
      const result = await runCli(['audit', 'verify', '--db', other.db.url, '--checkpoint', cp.file]);
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/not a checkpoint\+jwt signed by one of the keys in this database/);
    } finally {
      await other.close();
    }
    expect((await runCli(['audit', 'verify', '--db', 'postgres://u@h/db'])).code).toBe(2);
  });

  it('without --jwks, says on stderr and in --json that only the file\'s own keys vouched for the checkpoint', async () => {
    const cp = await keepCheckpoint();
    const result = await runCli(['audit', 'verify', '--db', t.db.url, '--checkpoint', cp.file, '--json']);
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ ok: true, trust: 'file' });
    expect(result.stderr).toMatch(/checked only against keys read from .*broker\.db itself/);
    expect(result.stderr).toMatch(/--jwks/);
    // Without a checkpoint no key is read, and there is nothing to warn about.
    expect(await runCli(['audit', 'verify', '--db', t.db.url])).toMatchObject({ code: 0, stderr: '' });
  });

  it('refuses (1) a checkpoint the intruder signed with a key written into the file, against the broker\'s JWKS kept or served', async () => {
    const cp = await keepCheckpoint();
    const jwks = await keepJwks();
    await issue('after');
    // The evidence an auditor is handed: a copy of the file, which the intruder has rewritten.
    await t.broker.close();
    const evidence = join(files, 'evidence.db');
    copyFileSync(t.db.url, evidence);
    await t.restart();
    const intruder = await intruderKey();
    const db = new Database(evidence);
    let forgeries: Record<string, string>;
    try {
      // The newest events deleted, and a checkpoint of the shortened chain's head signed with the
      // intruder's key: once under a kid of their own, once under the broker's own kid, whose
      // public key the intruder replaces in signing_keys.
      db.exec('DROP TRIGGER audit_events_no_update; DROP TRIGGER audit_events_no_delete;');
      db.prepare('DELETE FROM audit_events WHERE seq > ?').run(cp.seq - 1);
      const head = db.prepare('SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1').get() as { seq: number; hash: string };
      const brokerKid = (db.prepare('SELECT kid FROM signing_keys LIMIT 1').get() as { kid: string }).kid;
      db.prepare('INSERT INTO signing_keys (kid, alg, public_jwk, created_at, activates_at) VALUES (?, ?, ?, ?, ?)').run('intruder', 'ES256', intruder.publicJwk, t.clock(), t.clock());
      db.prepare('UPDATE signing_keys SET alg = ?, public_jwk = ? WHERE kid = ?').run('ES256', intruder.publicJwk, brokerKid);
      forgeries = { 'a kid of its own': await intruder.sign('intruder', head), 'the broker\'s kid': await intruder.sign(brokerKid, head) };
    } finally {
      db.close();
    }

    const served = await listen(t);
    try {
      for (const [how, forged] of Object.entries(forgeries)) {
        // Judged by the keys in the file, the forgery passes: the chain is whole and holds its head.
        const fooled = await runCli(['audit', 'verify', '--db', evidence, '--checkpoint', '-', '--json'], {}, { stdin: forged });
        expect(fooled.code, how).toBe(0);
        expect(JSON.parse(fooled.stdout), how).toMatchObject({ ok: true, trust: 'file' });
        // Judged by the broker's JWKS, kept in a file or fetched over HTTP, it is refused.
        for (const anchor of [jwks, `${served.url}/.well-known/jwks.json`]) {
          const refused = await runCli(['audit', 'verify', '--db', evidence, '--checkpoint', '-', '--jwks', anchor], {}, { stdin: forged });
          expect(refused, `${how}, --jwks ${anchor}`).toMatchObject({ code: 1, stdout: '' });
          expect(refused.stderr, how).toMatch(/not a checkpoint\+jwt signed by one of the keys in /);
        }
      }
      // A forgery under a kid of its own is named for what it is: a key only the file holds.
      const own = await runCli(['audit', 'verify', '--db', evidence, '--checkpoint', '-', '--jwks', jwks], {}, { stdin: forgeries['a kid of its own'] });
      expect(own.stderr).toMatch(/key intruder, which .*evidence\.db holds but .*jwks\.json does not/);
      const borrowed = await runCli(['audit', 'verify', '--db', evidence, '--checkpoint', '-', '--jwks', jwks], {}, { stdin: forgeries['the broker\'s kid'] });
      expect(borrowed.stderr).toMatch(/it does not verify against key \S+ there/);
      // And the checkpoint the auditor kept still shows what was done.
      const kept = await runCli(['audit', 'verify', '--db', evidence, '--checkpoint', cp.file, '--jwks', jwks, '--json']);
      expect(kept.code).toBe(65);
      expect(JSON.parse(kept.stdout)).toEqual({ ok: false, reason: 'truncated', trust: 'jwks' });
    } finally {
      await served.close();
    }
  });

  it('cannot read (66) a JWKS that is missing, not JSON, not a JWKS, too large, or answered with an error or a redirect', async () => {
    const cp = await keepCheckpoint();
    const verify = (jwks: string) => runCli(['audit', 'verify', '--db', t.db.url, '--checkpoint', cp.file, '--jwks', jwks]);
    const write = (name: string, text: string) => {
      writeFileSync(join(files, name), text);
      return join(files, name);
    };
    const cases: [string, RegExp][] = [
      [join(files, 'nope.json'), /cannot read .*nope\.json: ENOENT/],
      [write('text.json', 'not json'), /is not a JWKS/],
      [write('object.json', '{"kid": "k1"}'), /is not a JWKS/],
      [write('nokeys.json', '{"keys": [{"kty": "EC"}]}'), /holds no signing key/],
      [write('huge.json', `{"keys": [], "pad": "${'x'.repeat(600 * 1024)}"}`), /larger than/],
    ];
    for (const [jwks, message] of cases) {
      const result = await verify(jwks);
      expect(result, jwks).toMatchObject({ code: 66, stdout: '' });
      expect(result.stderr, jwks).toMatch(message);
    }
    const answers: [Awaited<ReturnType<typeof serve>>, RegExp][] = [
      [await serve('{}', 404), /answered 404/],
      [await serve('', 302, { location: 'https://elsewhere.example.com/jwks.json' }), /answered 302/],
      [await serve(Buffer.alloc(600 * 1024, 32)), /larger than/],
      [await serve('<html>'), /is not a JWKS/],
    ];
    for (const [server, message] of answers) {
      try {
        const result = await verify(server.url);
        expect(result, server.url).toMatchObject({ code: 66, stdout: '' });
        expect(result.stderr, server.url).toMatch(message);
      } finally {
        await server.close();
      }
    }
    const gone = await serve('{}');
    await gone.close();
    const unreachable = await verify(gone.url);
    expect(unreachable.code).toBe(66);
    expect(unreachable.stderr).toContain(`cannot fetch ${gone.url} (ECONNREFUSED)`);
  });
});
