import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseConfig, createTestIssuers, type TestIssuers } from '../helpers/broker.js';
import { createTestIssuer } from '../helpers/issuer.js';
import { startBroker, startProcess, until, type BrokerProcess } from '../helpers/process.js';

/**
 * CONTRACT section 7: SIGHUP reloads the configuration file in place. A real broker process, a
 * real signal, real HTTP: a valid file takes effect for every later request and is recorded as
 * `config.loaded`; an invalid one is refused with the messages a start would give, and the
 * running configuration stays; a `jwksFile` is read again.
 */
describe('SIGHUP', () => {
  let dir: string;
  let issuers: TestIssuers;
  let configFile: string;
  let jwksFile: string;
  let broker: BrokerProcess & { url: string };
  let raw: Record<string, any>;

  const write = (config: Record<string, unknown>) => writeFileSync(configFile, YAML.stringify(config));
  const logged = (msg: string) => broker.lines().filter((line) => line.msg === msg);
  const hangUp = async (msg: string) => {
    const before = logged(msg).length;
    broker.child.kill('SIGHUP');
    await until(() => logged(msg).length > before || broker.child.exitCode !== null);
    expect(broker.child.exitCode).toBeNull();
    return logged(msg).at(-1) as Record<string, any>;
  };
  const pipeline = () => issuers.ci.token('repo:acme/app:ref:refs/heads/main', { repository: 'acme/app', actor: 'pat' });
  const ask = async (scopes: string[]) =>
    (
      await fetch(`${broker.url}/v1/credentials`, {
        method: 'POST',
        headers: { authorization: `Bearer ${await pipeline()}`, 'content-type': 'application/json' },
        body: JSON.stringify({ task_id: 'reload-test', scopes, audience: 'registry.acme.internal' }),
      })
    ).status;
  const asPerson = async (token: string, path: string) => fetch(`${broker.url}${path}`, { headers: { authorization: `Bearer ${token}` } });

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'jit-reload-test-'));
    issuers = await createTestIssuers();
    configFile = join(dir, 'broker.yaml');
    jwksFile = join(dir, 'sso-jwks.json');
    writeFileSync(jwksFile, JSON.stringify(issuers.sso.jwks));
    raw = baseConfig(dir, issuers) as Record<string, any>;
    const sso = raw.identity.issuers[1];
    delete sso.jwks;
    sso.jwksFile = jwksFile;
    write(raw);
    broker = await startBroker(configFile);
  });

  afterAll(async () => {
    broker?.child.kill('SIGTERM');
    await broker?.exited;
    rmSync(dir, { recursive: true, force: true });
  });

  it('applies a valid file to every later request, and records config.loaded', async () => {
    expect(await ask(['logs:read'])).toBe(201);
    expect(await ask(['reports:read'])).toBe(403);

    raw.scopes.push({ name: 'reports:read', risk: 'low', maxTtl: '5m' });
    raw.policies[0].scopes = ['artifacts:read', 'reports:read'];
    write(raw);
    const line = await hangUp('configuration reloaded');
    expect(line.changed).toEqual(['scopes', 'policies']);

    expect(await ask(['reports:read'])).toBe(201);
    expect(await ask(['logs:read'])).toBe(403);
    const auditor = await issuers.sso.token('ivy', { groups: ['auditors'], preferred_username: 'ivy' });
    const events = (await (await asPerson(auditor, '/v1/audit/events?type=config.loaded')).json()) as { items: { data: Record<string, unknown> }[] };
    // A start is recorded by each process that starts (one per worker); a reload once, whatever the workers.
    const workers = broker.lines().find((entry) => entry.msg === 'broker listening')?.workers as number;
    expect(line.workers).toBe(workers);
    expect(events.items.map((event) => event.data.trigger)).toEqual([...Array(workers).fill('start'), 'reload']);
    expect(events.items.at(-1)?.data).toMatchObject({
      file: configFile,
      sha256: createHash('sha256').update(readFileSync(configFile)).digest('hex'),
      scopes: 6,
    });
  });

  it('refuses an invalid file with the messages a start gives, and keeps the running configuration', async () => {
    const valid = readFileSync(configFile, 'utf8');
    write({ ...raw, clockSkew: 'later', policies: [...raw.policies, { id: 'x', match: { issuer: 'ci' }, scopes: ['nope:read'] }] });
    const line = await hangUp('invalid configuration; the running configuration stays');

    const check = await startProcess(['--check-config', configFile]);
    expect(await check.exited).toBe(78);
    const atStart = check.output.stderr.split('\n').filter((text) => text.startsWith('  - ')).map((text) => text.slice(4));
    expect(atStart).toEqual(expect.arrayContaining(['clockSkew: "later" is not a duration such as 30s, 15m, 1h or 7d']));
    expect(line.problems).toEqual(atStart);
    expect(line.level).toBe('error');

    expect(await ask(['reports:read'])).toBe(201);
    expect(await ask(['logs:read'])).toBe(403);
    writeFileSync(configFile, valid);
  });

  it('refuses a file that changes a setting only a restart can apply', async () => {
    write({ ...raw, signing: { ...raw.signing, algorithm: 'EdDSA' } });
    const line = await hangUp('invalid configuration; the running configuration stays');
    expect(line.problems).toEqual([
      'signing: cannot change while the broker runs; restart the broker to apply it (or put back the running value to reload the rest)',
    ]);
    write(raw);
  });

  it('reads a jwksFile again: a rotated key is trusted, the old one no longer', async () => {
    const rotated = await createTestIssuer(issuers.sso.iss);
    const approver = (issuer: typeof rotated) => issuer.token('alice', { groups: ['approvers'], preferred_username: 'alice' });
    expect((await asPerson(await approver(issuers.sso), '/v1/approvals')).status).toBe(200);
    expect((await asPerson(await approver(rotated), '/v1/approvals')).status).toBe(401);

    writeFileSync(jwksFile, JSON.stringify(rotated.jwks));
    const line = await hangUp('configuration reloaded');
    expect(line.changed).toEqual([]);

    expect((await asPerson(await approver(rotated), '/v1/approvals')).status).toBe(200);
    expect((await asPerson(await approver(issuers.sso), '/v1/approvals')).status).toBe(401);
  });

  it('refuses a jwksFile that is no longer readable, and keeps the keys it has', async () => {
    writeFileSync(jwksFile, '{"keys": "not a list"');
    const line = await hangUp('invalid configuration; the running configuration stays');
    expect(line.file).toBe(jwksFile);
    expect(line.problems).toEqual([expect.stringMatching(/^issuer "sso": jwksFile is not a readable JWKS/)]);
    expect(await ask(['reports:read'])).toBe(201);
  });
});
