import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
      expect(JSON.parse(truncated.stdout)).toEqual({ ok: false, reason: 'truncated' });
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
    const cp = await keepCheckpoint();
    expect(existsSync(`${t.db.url}-wal`)).toBe(true); // the broker runs: the newest events are in the WAL
    const before = beside(t.db.url);
    const result = await runCli(['audit', 'verify', '--db', t.db.url, '--checkpoint', cp.file]);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(result.stdout).toContain(`holding the checkpoint's head (seq ${cp.seq})`);
    expect(beside(t.db.url)).toEqual(before);
  });

  it('verifies a copy of the file alone, with no -wal, creating none', async () => {
    const cp = await keepCheckpoint();
    await t.broker.close(); // folds the WAL into the file
    const evidence = mkdtempSync(join(tmpdir(), 'jit-evidence-'));
    try {
      const copy = join(evidence, 'broker.db');
      copyFileSync(t.db.url, copy);
      const result = await runCli(['audit', 'verify', '--db', copy, '--checkpoint', cp.file]);
      expect(result).toMatchObject({ code: 0, stderr: '' });
      expect(readdirSync(evidence)).toEqual(['broker.db']);
    } finally {
      rmSync(evidence, { recursive: true, force: true });
      await t.restart();
    }
  });

  it('reports a table truncated behind the broker\'s back as TRUNCATED, exit 65', async () => {
    const cp = await keepCheckpoint();
    await issue('after');
    await t.broker.close();
    await truncate(cp.seq - 1);
    const before = beside(t.db.url);
    const result = await runCli(['audit', 'verify', '--db', t.db.url, '--checkpoint', cp.file]);
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
});
