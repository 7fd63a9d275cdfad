import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeJwt } from 'jose';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { liveClock, listen, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { jit } from '../helpers/jit-process.js';
import { tempDir } from '../helpers/temp.js';

/**
 * `jit dev-token` with development issuers, as in the shipped config: their key is made by the
 * broker at its start, under a keyDir relative to the folder the broker runs in.
 */

let t: TestBroker;
let server: Awaited<ReturnType<typeof listen>>;
/** The folder the broker "runs in": its config says ./data/dev-issuer. */
let home: string;
let configFile: string;

beforeAll(async () => {
  home = tempDir('jit-dev-home-');
  configFile = join(home, 'broker.yaml');
  t = await startTestBroker({
    clock: liveClock(),
    configure(config) {
      const issuers = (config.identity as { issuers: Record<string, unknown>[] }).issuers;
      for (const issuer of issuers) {
        delete issuer.jwks;
        issuer.dev = { keyDir: './data/dev-issuer' };
      }
      // The file as the CLI reads it, its key directory relative as in config/broker.yaml ...
      writeFileSync(configFile, YAML.stringify(config));
      // ... and the broker that "runs in" home, where that path leads.
      for (const issuer of issuers) issuer.dev = { keyDir: join(home, 'data', 'dev-issuer') };
    },
  });
  server = await listen(t);
});
afterAll(async () => {
  await server?.close();
  await t?.close();
});

const devToken = (args: string[], cwd = home) => jit(['dev-token', '--config', configFile, ...args], { cwd });

describe('jit dev-token', () => {
  it('mints an identity the broker accepts, with the lifetime and claims asked for', async () => {
    const minted = await devToken(['--sub', 'repo:acme/app:ref:refs/heads/main', '--ttl', '30m', '--claim', 'ref=refs/heads/main', '--claim', 'repository=acme/app']);
    expect(minted).toMatchObject({ code: 0, stderr: '' });
    const identity = minted.stdout.trim();
    const claims = decodeJwt(identity);
    expect(claims).toMatchObject({ iss: 'https://ci.test', sub: 'repo:acme/app:ref:refs/heads/main', aud: 'jit-broker', ref: 'refs/heads/main' });
    expect((claims.exp as number) - (claims.iat as number)).toBe(1800);

    const used = await jit(['request', '--scope', 'artifacts:read', '--audience', 'registry.acme.internal', '--task', 'dev-1'], {
      env: { BROKER_URL: server.url, BROKER_IDENTITY_TOKEN: identity },
    });
    expect(used.code).toBe(0);

    const person = await devToken(['--issuer', 'sso', '--sub', 'alice', '--claim', 'groups=["approvers","ml-release"]', '--ttl', '90', '--json']);
    const body = JSON.parse(person.stdout) as { token: string; iss: string; sub: string; expires_at: string };
    expect(body).toMatchObject({ iss: 'https://sso.test', sub: 'alice' });
    expect(decodeJwt(body.token)).toMatchObject({ groups: ['approvers', 'ml-release'], preferred_username: 'alice' });
    expect(Date.parse(body.expires_at) / 1000).toBe(decodeJwt(body.token).exp);
    expect((decodeJwt(body.token).exp as number) - (decodeJwt(body.token).iat as number)).toBe(90);
  });

  it('refuses, and makes no key, when run where the broker did not make one', async () => {
    const elsewhere = tempDir('jit-dev-elsewhere-');
    const result = await devToken(['--sub', 'repo:acme/app:ref:refs/heads/main'], elsewhere);
    expect(result).toEqual({
      code: 1,
      stdout: '',
      stderr: `jit dev-token: no development key in ${join(elsewhere, 'data', 'dev-issuer')}: the broker makes it at its start. Start the broker (npm start) first, and run dev-token from the folder it runs in (the configuration's relative paths are from there)\n`,
    });
    expect(existsSync(join(elsewhere, 'data'))).toBe(false);
  });

  it('says when the configuration has no such development issuer, and checks its flags', async () => {
    const unknown = await devToken(['--issuer', 'okta', '--sub', 'x']);
    expect(unknown).toMatchObject({ code: 2, stderr: expect.stringContaining('no development issuer is named "okta" (have: ci, sso)') });
    expect((await devToken(['--sub', 'x', '--ttl', 'forever'])).code).toBe(2);
    expect((await devToken(['--sub', 'x', '--claim', 'novalue'])).code).toBe(2);
    expect((await devToken([])).stderr).toBe('jit dev-token: --sub is required (see jit dev-token --help)\n');
  });
});
