import { chmodSync, chownSync, existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createLocalJWKSet, decodeProtectedHeader, exportJWK, generateKeyPair, jwtVerify, type JSONWebKeySet } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { RETIRE_GRACE_MS, SIGNING_SLACK_MS } from '../../src/tokens/index.js';
import { BROKER_ISSUER, bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { ENGINE } from '../helpers/engine.js';
import { allEvents } from '../helpers/records.js';

let t: TestBroker | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const body = { task_id: 'build-1', scopes: ['artifacts:read'], audience: 'registry.acme.internal' };
const jwks = async (t: TestBroker) => (await t.http.get('/.well-known/jwks.json')).body as JSONWebKeySet & { keys: { kid: string }[] };
const kids = async (t: TestBroker) => (await jwks(t)).keys.map((k) => k.kid);
const issue = async (t: TestBroker, ttl = 900) =>
  (await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ ...body, ttl_seconds: ttl })).body.access_token as string;
const kidOf = (token: string) => decodeProtectedHeader(token).kid as string;
const verifies = (token: string, keys: JSONWebKeySet, now: number) =>
  jwtVerify(token, createLocalJWKSet(keys), { issuer: BROKER_ISSUER, currentDate: new Date(now) }).then(
    () => true,
    () => false,
  );

describe('signing keys', () => {
  // Key files are SQLite's custody without a key-encryption key; PostgreSQL needs one (cluster.test.ts).
  it.runIf(ENGINE === 'sqlite')('are created on first start as files readable by the owner alone, and loaded on the next', async () => {
    t = await startTestBroker();
    const [first] = (await jwks(t)).keys;
    const keyDir = join(t.dir, 'keys');
    expect(statSync(keyDir).mode & 0o777).toBe(0o700);
    const files = readdirSync(keyDir);
    expect(files).toEqual([`${first?.kid}.jwk.json`]);
    expect(statSync(join(keyDir, files[0] as string)).mode & 0o777).toBe(0o600);
    expect(statSync(t.db.url).mode & 0o077).toBe(0);

    await t.restart();
    expect(await kids(t)).toEqual([first?.kid]);
    expect(kidOf(await issue(t))).toBe(first?.kid);
  });

  it.runIf(ENGINE === 'sqlite')('says at start why it cannot sign yet when the published keys\' files are gone, and when it will', async () => {
    t = await startTestBroker();
    const [first] = (await jwks(t)).keys;
    const keyDir = join(t.dir, 'keys');
    for (const file of readdirSync(keyDir)) rmSync(join(keyDir, file));
    await t.restart();
    const warning = t.logs.map((line) => JSON.parse(line) as Record<string, unknown>).find((line) => String(line.msg).startsWith('no signing key this process may use yet'));
    expect(warning).toMatchObject({ level: 'warn', missing: [first?.kid], signs_from: expect.any(String) });
    expect(Date.parse(warning?.signs_from as string)).toBeGreaterThan(t.clock());
    expect((await t.http.get('/readyz')).status).toBe(503);
  });

  it.runIf(ENGINE === 'sqlite')('refuses to start with a key file others can read', async () => {
    t = await startTestBroker();
    const keyDir = join(t.dir, 'keys');
    chmodSync(join(keyDir, readdirSync(keyDir)[0] as string), 0o644);
    await expect(t.restart()).rejects.toThrow(/readable by other users.*chmod 600/);
    chmodSync(join(keyDir, readdirSync(keyDir)[0] as string), 0o600);
    await t.restart();
  });

  it.runIf(ENGINE === 'sqlite')('refuses to start with a key directory anyone may write to, a key file another user owns, or a key file swapped for another key', async () => {
    t = await startTestBroker();
    const keyDir = join(t.dir, 'keys');
    const file = join(keyDir, readdirSync(keyDir)[0] as string);
    chmodSync(keyDir, 0o777);
    await expect(t.restart()).rejects.toThrow(expect.objectContaining({ code: 'key_dir_unsafe', message: expect.stringMatching(/writable by every user.*chmod 700/) }));
    chmodSync(keyDir, 0o700);
    if (process.getuid?.() === 0) {
      chownSync(file, 4242, 4242); // planted by another user: a broker running as root would read it
      await expect(t.restart()).rejects.toThrow(/owned by another user \(uid 4242\)/);
      chownSync(file, 0, 0);
    }
    const original = readFileSync(file, 'utf8');
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    writeFileSync(file, JSON.stringify(await exportJWK(privateKey)), { mode: 0o600 });
    await expect(t.restart()).rejects.toThrow(expect.objectContaining({ code: 'key_file_unusable', message: expect.stringContaining('holds another key than the one published') }));
    writeFileSync(file, original, { mode: 0o600 });
    await t.restart();
  });

  it('publish the next key publishAhead before it signs, so a JWKS cached before the rotation verifies every token', async () => {
    t = await startTestBroker(); // rotateEvery 24h, publishAhead 10m (the default)
    const start = t.clock();
    const oldToken = await issue(t, 900);
    const oldKid = kidOf(oldToken);

    t.clock.set(start + 24 * HOUR - 10 * MINUTE);
    await t.broker.scheduler.runAll();
    const [nextKid, ...rest] = await kids(t);
    expect(rest).toEqual([oldKid]);
    expect(kidOf(await issue(t))).toBe(oldKid); // published, not yet signing
    const rotated = (await allEvents(t)).filter((e) => e.type === 'key.rotated').at(-1);
    expect(rotated?.data).toMatchObject({ kid: nextKid, previous_kid: oldKid, activates_at: new Date(start + 24 * HOUR).toISOString() });

    // A resource server's cache, fetched a moment before the new key starts to sign.
    t.clock.set(start + 24 * HOUR - 1);
    const cached = await jwks(t);
    const tokens = [await issue(t)];
    t.clock.set(start + 24 * HOUR);
    tokens.push(await issue(t), await issue(t));
    expect(tokens.map(kidOf)).toEqual([oldKid, nextKid, nextKid]);
    for (const token of tokens) expect(await verifies(token, cached, t.clock())).toBe(true);
  });

  it('with a scheduler that runs hourly, publish the next key at the last run still publishAhead ahead of the key\'s time', async () => {
    t = await startTestBroker({ configure: (c) => (c.scheduler = { interval: '60m' }) }); // rotateEvery 24h, publishAhead 10m
    const start = t.clock();
    const firstKid = kidOf(await issue(t));
    t.clock.set(start + 24 * HOUR - 70 * MINUTE - 1);
    await t.broker.scheduler.runAll();
    expect(await kids(t)).toEqual([firstKid]);
    // The run after this one may come an hour later: past the key's 24 hours and its slack, too late.
    t.clock.set(start + 24 * HOUR - 70 * MINUTE);
    await t.broker.scheduler.runAll();
    const rotated = (await allEvents(t)).filter((e) => e.type === 'key.rotated').at(-1);
    expect(rotated?.data).toMatchObject({ previous_kid: firstKid, activates_at: new Date(start + 24 * HOUR).toISOString() });
    t.clock.set(start + 24 * HOUR);
    expect(kidOf(await issue(t))).toBe(rotated?.data.kid);
  });

  it('say in Cache-Control that the JWKS may be cached for at most half of publishAhead', async () => {
    t = await startTestBroker({ configure: (c) => ((c.signing as Record<string, unknown>).publishAhead = '4m') });
    const response = await t.http.get('/.well-known/jwks.json');
    const maxAge = Number(/max-age=(\d+)/.exec(response.headers['cache-control'] ?? '')?.[1]);
    expect(maxAge).toBeGreaterThan(0);
    expect(maxAge).toBeLessThanOrEqual(120);
  });

  it('retire a superseded key once its tokens have expired, and not before', async () => {
    t = await startTestBroker({
      configure: (c) => Object.assign(c.signing as Record<string, unknown>, { rotateEvery: '10m', publishAhead: '2m' }),
    });
    const start = t.clock();
    t.clock.set(start + 8 * MINUTE);
    await t.broker.scheduler.runAll(); // the next key is published at 8 min, signs from 10 min
    t.clock.set(start + 9 * MINUTE);
    const oldToken = await issue(t, 900); // signed by the old key at 9 min, valid until 24 min
    const oldKid = kidOf(oldToken);

    t.clock.set(start + 10 * MINUTE);
    const newKid = kidOf(await issue(t));
    expect(newKid).not.toBe(oldKid);

    // Past the old key's signing time and grace, but its token is live: it stays published.
    t.clock.set(start + 10 * MINUTE + SIGNING_SLACK_MS + RETIRE_GRACE_MS);
    await t.broker.scheduler.runAll();
    expect(await verifies(oldToken, await jwks(t), t.clock())).toBe(true);
    expect(await kids(t)).toContain(oldKid);

    // Its token has expired, but not a minute ago: a replica whose clock runs ahead retires nothing yet.
    t.clock.set(start + 24 * MINUTE + 1_000);
    await t.broker.scheduler.runAll();
    expect(await kids(t)).toContain(oldKid);

    t.clock.set(start + 24 * MINUTE + RETIRE_GRACE_MS + 1_000);
    await t.broker.scheduler.runAll();
    expect(await kids(t)).not.toContain(oldKid);
    expect(await kids(t)).toContain(newKid);
    expect(existsSync(join(t.dir, 'keys', `${oldKid}.jwk.json`))).toBe(false);
    expect((await allEvents(t)).filter((e) => e.type === 'key.retired').map((e) => e.data.kid)).toEqual([oldKid]);
  });

  it('stop signing with a key that outlived its rotation: 503 rather than a token from a key about to be retired', async () => {
    t = await startTestBroker({
      configure: (c) => Object.assign(c.signing as Record<string, unknown>, { rotateEvery: '10m', publishAhead: '2m' }),
    });
    // No scheduler run: the key is never rotated.
    t.clock.advance(10 * MINUTE + SIGNING_SLACK_MS);
    const response = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send(body);
    expect(response.status).toBe(503);
    expect((await t.http.get('/readyz')).status).toBe(503);
  });

  it('sign at once after a stop longer than rotateEvery: the old key signs until its successor, published at start, activates', async () => {
    t = await startTestBroker({
      configure: (c) => Object.assign(c.signing as Record<string, unknown>, { rotateEvery: '10m', publishAhead: '2m' }),
    });
    const before = kidOf(await issue(t));
    await t.broker.close();
    t.clock.advance(25 * 60 * MINUTE); // stopped over a weekend
    await t.restart();
    await t.broker.scheduler.runAll(); // the start's catch-up
    expect((await t.http.get('/readyz')).status).toBe(200);
    const token = await issue(t, 900);
    expect(kidOf(token)).toBe(before);
    expect(await verifies(token, await jwks(t), t.clock())).toBe(true);
    // Until its successor activates, publishAhead after the start; then the successor signs, and
    // the old key is retired only once its last token has expired.
    t.clock.advance(2 * MINUTE);
    await t.broker.scheduler.runAll();
    const after = kidOf(await issue(t));
    expect(after).not.toBe(before);
    expect(await kids(t)).toContain(before);
    t.clock.advance(15 * MINUTE + RETIRE_GRACE_MS);
    await t.broker.scheduler.runAll();
    expect(await kids(t)).not.toContain(before);
    expect(await kids(t)).toContain(after);
  });

  it.each(['EdDSA', 'RS256'])('sign with %s when configured, once its first key has been published publishAhead', async (algorithm) => {
    t = await startTestBroker();
    const before = kidOf(await issue(t));
    await t.restart((c) => ((c.signing as Record<string, unknown>).algorithm = algorithm));
    expect(kidOf(await issue(t))).toBe(before); // the new key is only published yet
    t.clock.advance(10 * MINUTE);
    await t.broker.scheduler.runAll();
    const token = await issue(t);
    expect(decodeProtectedHeader(token).alg).toBe(algorithm);
    expect(await verifies(token, await jwks(t), t.clock())).toBe(true);
  });
});
