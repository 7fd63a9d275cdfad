import { chmodSync, existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { RETIRE_GRACE_MS } from '../../src/tokens/index.js';
import { BROKER_ISSUER, bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { allEvents } from '../helpers/records.js';

let t: TestBroker | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

const body = { task_id: 'build-1', scopes: ['artifacts:read'], audience: 'registry.acme.internal' };
const jwks = async (t: TestBroker) => (await t.http.get('/.well-known/jwks.json')).body as { keys: { kid: string }[] };
const issue = async (t: TestBroker, ttl = 900) =>
  (await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ ...body, ttl_seconds: ttl })).body.access_token as string;

describe('signing keys', () => {
  it('are created on first start as files readable by the owner alone, and loaded on the next', async () => {
    t = await startTestBroker();
    const [first] = (await jwks(t)).keys;
    const keyDir = join(t.dir, 'keys');
    expect(statSync(keyDir).mode & 0o777).toBe(0o700);
    const files = readdirSync(keyDir);
    expect(files).toEqual([`${first?.kid}.jwk.json`]);
    expect(statSync(join(keyDir, files[0] as string)).mode & 0o777).toBe(0o600);
    expect(statSync(join(t.dir, 'broker.db')).mode & 0o077).toBe(0);

    await t.restart();
    expect((await jwks(t)).keys.map((k) => k.kid)).toEqual([first?.kid]);
    expect(decodeProtectedHeader(await issue(t)).kid).toBe(first?.kid);
  });

  it('refuses to start with a key file others can read', async () => {
    t = await startTestBroker();
    const keyDir = join(t.dir, 'keys');
    chmodSync(join(keyDir, readdirSync(keyDir)[0] as string), 0o644);
    await expect(t.restart()).rejects.toThrow(/readable by other users.*chmod 600/);
    t = undefined;
  });

  it('rotate on schedule; a token of the old key verifies until it expires, then the old key leaves the JWKS', async () => {
    t = await startTestBroker();
    const oldToken = await issue(t, 900);
    const oldKid = decodeProtectedHeader(oldToken).kid as string;

    t.clock.advance(24 * 3600_000);
    await t.broker.scheduler.runAll();
    const afterRotation = (await jwks(t)).keys.map((k) => k.kid);
    expect(afterRotation).toHaveLength(2);
    const newToken = await issue(t);
    const newKid = decodeProtectedHeader(newToken).kid as string;
    expect(newKid).not.toBe(oldKid);
    expect(afterRotation).toEqual([newKid, oldKid]);
    expect(allEvents(t).filter((e) => e.type === 'key.rotated').at(-1)?.data).toMatchObject({ kid: newKid, previous_kid: oldKid });

    const published = createLocalJWKSet(await jwks(t));
    await expect(jwtVerify(newToken, published, { issuer: BROKER_ISSUER, currentDate: new Date(t.clock()) })).resolves.toBeTruthy();

    // The old key's only token expired long ago; once the grace has passed it is retired.
    t.clock.advance(RETIRE_GRACE_MS);
    await t.broker.scheduler.runAll();
    expect((await jwks(t)).keys.map((k) => k.kid)).toEqual([newKid]);
    expect(existsSync(join(t.dir, 'keys', `${oldKid}.jwk.json`))).toBe(false);
    expect(allEvents(t).filter((e) => e.type === 'key.retired').map((e) => e.data.kid)).toEqual([oldKid]);
  });

  it('keep a superseded key published while any token it signed is unexpired', async () => {
    // publishAhead (default 10m) must be shorter than rotateEvery.
    t = await startTestBroker({ configure: (config) => Object.assign(config.signing as Record<string, unknown>, { rotateEvery: '10m', publishAhead: '1m' }) });
    t.clock.advance(9 * 60_000);
    const oldToken = await issue(t, 900); // signed 1 min before rotation, valid 14 more minutes after it
    const oldKid = decodeProtectedHeader(oldToken).kid as string;

    t.clock.advance(60_000);
    await t.broker.scheduler.runAll();
    const newKid = decodeProtectedHeader(await issue(t)).kid as string;
    expect(newKid).not.toBe(oldKid);

    t.clock.advance(10 * 60_000); // the old key is superseded well past the grace, its token still live
    await t.broker.scheduler.runAll();
    const keys = createLocalJWKSet(await jwks(t));
    await expect(jwtVerify(oldToken, keys, { issuer: BROKER_ISSUER, currentDate: new Date(t.clock()) })).resolves.toBeTruthy();

    t.clock.advance(4 * 60_000 + 1_000); // now it has expired
    await t.broker.scheduler.runAll();
    expect((await jwks(t)).keys.map((k) => k.kid)).not.toContain(oldKid);
    const rotatedAgain = (await jwks(t)).keys.map((k) => k.kid);
    expect(rotatedAgain).toContain(newKid);
  });

  it.each(['EdDSA', 'RS256'])('sign with %s when configured, replacing a key of another algorithm', async (algorithm) => {
    t = await startTestBroker();
    const dir = t.dir;
    await t.close();
    t = await startTestBroker({ dir, issuers: t.issuers, configure: (config) => ((config.signing as Record<string, unknown>).algorithm = algorithm) });
    const token = await issue(t);
    expect(decodeProtectedHeader(token).alg).toBe(algorithm);
    const keys = createLocalJWKSet(await jwks(t));
    await expect(jwtVerify(token, keys, { issuer: BROKER_ISSUER, currentDate: new Date(t.clock()) })).resolves.toBeTruthy();
  });
});
