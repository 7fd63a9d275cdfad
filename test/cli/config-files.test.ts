import { chmodSync, chownSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { liveClock, listen, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { jit } from '../helpers/jit-process.js';
import { tempDir } from '../helpers/temp.js';

/**
 * The CLI's own files (`profile.json`, `login.json`) decide where identity tokens go and which
 * identity is used: as ssh's StrictModes does, jit reads them only when nobody else could have
 * written them (and a login, which holds a token, only when nobody else can read it).
 */

let t: TestBroker;
let server: Awaited<ReturnType<typeof listen>>;

beforeAll(async () => {
  t = await startTestBroker({ clock: liveClock() });
  server = await listen(t);
});
afterAll(async () => {
  await server?.close();
  await t?.close();
});

/** The uid of `nobody`: another user of this machine (the tests run as root, who may chown). */
const ANOTHER_USER = 65534;

/** A config dir holding `name` with `content`, mode 0600, as jit writes it. */
function configWith(name: string, content: unknown): { dir: string; file: string } {
  const dir = join(tempDir('jit-config-files-'), 'jit');
  mkdirSync(dir, { mode: 0o700 });
  const file = join(dir, name);
  writeFileSync(file, JSON.stringify(content), { mode: 0o600 });
  return { dir, file };
}

describe.skipIf(process.getuid === undefined)('the CLI\'s own files, as ssh\'s StrictModes reads them', () => {
  it('refuses a profile another user could write, or owns: it would send the identity to a broker of theirs', async () => {
    const { dir, file } = configWith('profile.json', { broker: server.url });
    const requests = async () => jit(['requests'], { env: { JIT_CONFIG_DIR: dir, BROKER_IDENTITY_TOKEN: await t.as.ml() } });
    expect((await requests()).code).toBe(0);
    // Not a secret: others may read it.
    chmodSync(file, 0o644);
    expect((await requests()).code).toBe(0);

    chmodSync(file, 0o666);
    expect(await requests()).toEqual({
      code: 1,
      stdout: '',
      stderr: `jit requests: ${file} is writable by other users (mode 666), who could make jit use a broker or an identity of theirs; jit does not read it: chmod 600 ${file}\n`,
    });
    chmodSync(file, 0o620);
    expect((await requests()).stderr).toContain(`is writable by other users (mode 620)`);

    chmodSync(file, 0o600);
    chownSync(file, ANOTHER_USER, ANOTHER_USER);
    expect(await requests()).toEqual({
      code: 1,
      stdout: '',
      stderr: `jit requests: ${file} is owned by another user (uid ${ANOTHER_USER}), who could make jit use a broker or an identity of theirs; jit does not read it: remove it, or chown it to yourself and chmod 600 ${file}\n`,
    });
    // `profile set` reads the profile it keeps the rest of: refused alike.
    expect((await jit(['profile', 'set', '--broker', server.url], { env: { JIT_CONFIG_DIR: dir } })).code).toBe(1);
  });

  it('writes the profile 0600, over a file left at its temporary name with another mode too', async () => {
    const dir = join(tempDir('jit-config-files-'), 'jit');
    mkdirSync(dir, { mode: 0o700 });
    // What a `jit profile set` of a process with this pid left when it was killed, or a user made:
    // written through, it kept its mode, and the profile was then one others could change.
    writeFileSync(join(dir, `profile.json.${process.pid}.tmp`), '', { mode: 0o666 });
    chmodSync(join(dir, `profile.json.${process.pid}.tmp`), 0o666);
    expect((await jit(['profile', 'set', '--broker', server.url], { env: { JIT_CONFIG_DIR: dir } })).code).toBe(0);
    expect(statSync(join(dir, 'profile.json')).mode & 0o777).toBe(0o600);
    expect((await jit(['requests'], { env: { JIT_CONFIG_DIR: dir, BROKER_IDENTITY_TOKEN: await t.as.ml() } })).code).toBe(0);
  });

  it('refuses a login another user could write, read or owns', async () => {
    const login = { broker: server.url, issuer: 'https://sso.test', id_token: await t.as.person('lena', ['on-call']), expires_at: new Date(Date.now() + 3_600_000).toISOString() };
    const { dir, file } = configWith('login.json', login);
    const requests = () => jit(['requests'], { env: { JIT_CONFIG_DIR: dir } });
    expect((await requests()).code).toBe(0);

    chmodSync(file, 0o666);
    expect(await requests()).toEqual({
      code: 1,
      stdout: '',
      stderr: `jit requests: ${file} is writable by other users (mode 666), who could make jit use a broker or an identity of theirs; jit does not read it: chmod 600 ${file}\n`,
    });
    // It holds an ID token: readable by others is refused too.
    chmodSync(file, 0o640);
    expect(await requests()).toEqual({
      code: 1,
      stdout: '',
      stderr: `jit requests: ${file} is readable by other users (mode 640), and it holds a token; jit does not use it: chmod 600 ${file}, and sign in again (jit login), as others may have read it\n`,
    });

    chmodSync(file, 0o600);
    chownSync(file, ANOTHER_USER, ANOTHER_USER);
    expect(await requests()).toEqual({
      code: 1,
      stdout: '',
      stderr: `jit requests: ${file} is owned by another user (uid ${ANOTHER_USER}), who could make jit use a broker or an identity of theirs; jit does not read it: remove it, or chown it to yourself and chmod 600 ${file}\n`,
    });
  });
});
