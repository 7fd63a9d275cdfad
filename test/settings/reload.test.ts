import { createHmac, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import YAML from 'yaml';
import { afterEach, describe, expect, it } from 'vitest';
import { RESTART_ONLY_SETTINGS } from '../../src/broker.js';
import { loadConfig, ConfigError } from '../../src/config/index.js';
import { createAuthenticator } from '../../src/http/auth.js';
import { InvalidToken } from '../../src/shared/errors.js';
import { baseConfig, bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { startReceiver } from '../helpers/receiver.js';

/**
 * `broker.reload(file)` in-process: what a SIGHUP does, judged request by request. The signal
 * itself, on a real process, is in test/process/reload-signal.test.ts.
 */
describe('reloading the configuration', () => {
  let t: TestBroker | undefined;
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    await t?.close();
    t = undefined;
    for (const cleanup of cleanups.splice(0)) await cleanup();
  });

  /** The test broker's configuration as a file, edited by `edit`. */
  const configFile = (broker: TestBroker, edit: (raw: Record<string, any>) => void = () => {}, name = 'broker.yaml') => {
    const raw = baseConfig(broker.dir, broker.issuers, broker.db.url) as Record<string, any>;
    edit(raw);
    const file = join(broker.dir, name);
    writeFileSync(file, YAML.stringify(raw));
    return file;
  };
  /** A development issuer whose key is made, off the event loop, when the file is compiled. */
  const devIssuer = (broker: TestBroker) => ({
    name: 'dev-ci',
    kind: 'workload',
    issuer: 'https://dev-ci.invalid',
    dev: { keyDir: join(broker.dir, 'dev-issuer') },
    audiences: ['jit-broker'],
    algorithms: ['ES256'],
  });
  const ask = async (broker: TestBroker, scopes: string[], token?: string) =>
    broker.http
      .post('/v1/credentials')
      .set(bearer(token ?? (await broker.as.pipeline())))
      .send({ task_id: 'reload', scopes, audience: 'registry.acme.internal' });

  it('applies a valid file to the next request and records config.loaded', async () => {
    t = await startTestBroker();
    expect((await ask(t, ['logs:read'])).status).toBe(201);
    const file = configFile(t, (raw) => {
      raw.policies[0].scopes = ['artifacts:read'];
      raw.limits = { requestsPerMinute: 2 };
    });
    const outcome = await t.broker.reload(file, {});
    expect(outcome).toMatchObject({ status: 'applied', file, changed: ['policies', 'limits'] });
    expect(t.broker.config.limits.requestsPerMinute).toBe(2);

    expect((await ask(t, ['logs:read'])).status).toBe(403);
    expect((await ask(t, ['artifacts:read'])).status).toBe(429); // three requests this minute, two allowed
    const events = await t.db.sql<{ data: string }>(`SELECT data FROM audit_events WHERE type = 'config.loaded' ORDER BY seq`);
    expect(events.map((row) => JSON.parse(row.data).trigger)).toEqual(['start', 'reload']);
    expect(JSON.parse(events[1]?.data as string)).toMatchObject({ file, sha256: outcome.status === 'applied' ? outcome.sha256 : '' });
    expect((await t.http.get('/metrics')).text).toContain('broker_config_reloads_total{outcome="applied"} 1');
  });

  it('refuses a file whose config.loaded cannot be recorded, and keeps every running rule: nothing is judged by rules the log does not show', async () => {
    t = await startTestBroker();
    const file = configFile(t, (raw) => (raw.policies[0].scopes = ['artifacts:read']));
    const restore = await t.db.failWrites('audit_events', 'INSERT', `NEW.type = 'config.loaded'`);
    try {
      expect(await t.broker.reload(file, {})).toMatchObject({ status: 'refused', problems: ['the config.loaded event could not be recorded'] });
    } finally {
      await restore();
    }
    expect((await ask(t, ['logs:read'])).status).toBe(201);
    const events = await t.db.sql<{ data: string }>(`SELECT data FROM audit_events WHERE type = 'config.loaded'`);
    expect(events.map((row) => JSON.parse(row.data).trigger)).toEqual(['start']);
  });

  it('runs reloads one at a time in the order asked: each records and applies its file before the next reads, and the last one asked is the one that runs', async () => {
    t = await startTestBroker();
    // The first file takes longer to compile: its development issuer's key is made then, off the
    // event loop. Run side by side, the second would be recorded and applied first.
    const first = configFile(t, (raw) => {
      raw.identity.issuers.push(devIssuer(t as TestBroker));
      raw.policies[0].scopes = ['artifacts:read'];
    }, 'first.yaml');
    const second = configFile(t, (raw) => (raw.policies[0].scopes = ['model:train']), 'second.yaml');
    const outcomes = await Promise.all([t.broker.reload(first, {}), t.broker.reload(second, {})]);
    expect(outcomes).toMatchObject([
      { status: 'applied', file: first, changed: ['identity', 'policies'] },
      { status: 'applied', file: second, changed: ['identity', 'policies'] },
    ]);

    const events = await t.db.sql<{ data: string }>(`SELECT data FROM audit_events WHERE type = 'config.loaded' ORDER BY seq`);
    expect(events.map((row) => JSON.parse(row.data)).map(({ trigger, file }) => ({ trigger, file }))).toEqual([
      { trigger: 'start', file: null },
      { trigger: 'reload', file: first },
      { trigger: 'reload', file: second },
    ]);
    // The one recorded last is the one that runs.
    expect(t.broker.config.identity.issuers.map((issuer) => issuer.name)).toEqual(['ci', 'sso']);
    expect((await ask(t, ['model:train'])).status).toBe(201);
    expect((await ask(t, ['artifacts:read'])).status).toBe(403);
  });

  it('verifies the second identity of one request (a token exchange\'s subject) under the configuration that verified its first', async () => {
    t = await startTestBroker();
    const auth = createAuthenticator(t.broker.settings, t.broker.metrics);
    const actor = await auth.verify(await t.as.pipeline());
    const subject = await t.as.person('alice', ['ml-eng']);
    // A reload lands between the two: the SSO's tokens for this broker are no longer taken.
    const file = configFile(t, (raw) => {
      raw.identity.issuers.find((issuer: { name: string }) => issuer.name === 'sso').audiences = ['another-broker'];
    });
    const reloaded = await t.broker.reload(file, {});
    expect(reloaded, JSON.stringify(reloaded)).toMatchObject({ status: 'applied' });
    await expect(auth.verify(subject)).rejects.toThrow(InvalidToken);
    expect(await auth.verify(subject, actor)).toMatchObject({ sub: 'alice' });
  });

  it('refuses an invalid file with the problems loadConfig names, and keeps every running rule', async () => {
    t = await startTestBroker();
    const file = configFile(t, (raw) => {
      raw.policies[0].scopes = ['artifacts:read', 'no:such-scope'];
      raw.roles.push({ role: 'approver', match: { issuer: 'nobody' } });
    });
    const expected = (() => {
      try {
        loadConfig(file, {});
      } catch (error) {
        return (error as ConfigError).problems;
      }
      throw new Error('the file should be invalid');
    })();
    const outcome = await t.broker.reload(file, {});
    expect(outcome).toEqual({ status: 'refused', file, problems: expected });
    expect(expected.length).toBe(2);

    expect((await ask(t, ['logs:read'])).status).toBe(201);
    expect(await t.db.sql(`SELECT seq FROM audit_events WHERE type = 'config.loaded'`)).toHaveLength(1);
    expect((await t.http.get('/metrics')).text).toContain('broker_config_reloads_total{outcome="refused"} 1');
  });

  it('refuses a file whose own policyTests fail, naming the case, and keeps the running configuration', async () => {
    t = await startTestBroker();
    // Beside the configuration, named relative to it.
    const cases = join(t.dir, 'broker.cases.yaml');
    writeFileSync(
      cases,
      YAML.stringify({
        cases: [
          {
            name: 'a pipeline reads logs',
            identity: { issuer: 'ci', subject: 'repo:acme/app:ref:refs/heads/main', claims: { repository: 'acme/app', actor: 'pat' } },
            request: { scopes: ['logs:read'], audience: 'registry.acme.internal' },
            expect: { outcome: 'issued', ttl_seconds: 900 },
          },
        ],
      }),
    );
    // The edit drops logs:read from the pipelines' policy, which the file's own case says they hold.
    const file = configFile(t, (raw) => {
      raw.policies[0].scopes = ['artifacts:read'];
      raw.policyTests = 'broker.cases.yaml';
    });
    const outcome = await t.broker.reload(file, {});
    expect(outcome).toEqual({
      status: 'refused',
      file,
      problems: [
        `policyTests: case "a pipeline reads logs" (${cases}:2): expected issued, 900 s, got policy_denied (Scope logs:read refused: no policy grants them to this identity.)`,
        'policyTests: 1 case: 0 passed, 1 failed',
      ],
    });
    expect((await ask(t, ['logs:read'])).status).toBe(201);
    expect(await t.db.sql(`SELECT seq FROM audit_events WHERE type = 'config.loaded'`)).toHaveLength(1);

    // A cases file that cannot be run is refused the same way, naming the field and its line.
    writeFileSync(cases, 'cases:\n  - name: x\n    identity: { issuer: ci, subject: s }\n    request: { scopes: [logs:read], audience: a }\n    expect: { outcome: fine }\n');
    const invalid = await t.broker.reload(configFile(t, (raw) => (raw.policyTests = 'broker.cases.yaml')), {});
    expect(invalid).toMatchObject({ status: 'refused', problems: [expect.stringMatching(new RegExp(`^policyTests: ${cases}:5: cases\\.0\\.expect\\.outcome: Invalid option`))] });

    // Cases that pass: applied.
    writeFileSync(cases, YAML.stringify({ cases: [{ name: 'still reads logs', identity: { issuer: 'ci', subject: 'repo:acme/app:main', claims: { repository: 'acme/app', actor: 'pat' } }, request: { scopes: ['logs:read'], audience: 'x' }, expect: { outcome: 'issued' } }] }));
    expect(await t.broker.reload(configFile(t, (raw) => (raw.policyTests = 'broker.cases.yaml')), {})).toMatchObject({ status: 'applied', changed: ['policyTests'] });
  });

  it('takes these, and only these, as restart-only, as the README says', () => {
    expect([...RESTART_ONLY_SETTINGS].sort()).toEqual(['audit', 'console', 'database', 'issuer', 'listen', 'scheduler', 'signing']);
  });

  it.each(RESTART_ONLY_SETTINGS)('refuses a change to %s, which needs a restart', async (key) => {
    t = await startTestBroker();
    const changes: Record<(typeof RESTART_ONLY_SETTINGS)[number], (raw: Record<string, any>) => void> = {
      issuer: (raw) => (raw.issuer = 'http://other-broker.test'),
      listen: (raw) => (raw.listen = { port: 9999 }),
      database: (raw) => (raw.database = join(t?.dir as string, 'other.db')),
      signing: (raw) => (raw.signing.rotateEvery = '12h'),
      scheduler: (raw) => (raw.scheduler.interval = '2s'),
      audit: (raw) => (raw.audit = { checkpointEvery: '2h' }),
      console: (raw) => (raw.console = { issuer: 'sso', clientId: 'jit-broker' }),
    };
    const file = configFile(t, (raw) => {
      changes[key](raw);
      raw.policies[0].scopes = ['artifacts:read'];
    });
    const outcome = await t.broker.reload(file, {});
    expect(outcome).toMatchObject({ status: 'refused', problems: [expect.stringMatching(new RegExp(`^${key}: cannot change while the broker runs; restart`))] });
    expect((await ask(t, ['logs:read'])).status).toBe(201); // the policy change did not apply either
  });

  it('refuses a change to the console\'s sign-in issuer (its URL, dev or audiences), which the console reads at start; other issuers reload', async () => {
    const withConsole = (raw: Record<string, any>) => {
      raw.identity.issuers[1].audiences = ['jit-broker', 'jit-console'];
      raw.console = { issuer: 'sso', clientId: 'jit-console' };
    };
    t = await startTestBroker({ configure: withConsole });
    for (const change of [(raw: Record<string, any>) => (raw.identity.issuers[1].issuer = 'https://sso2.test'), (raw: Record<string, any>) => (raw.identity.issuers[1].audiences = ['jit-console'])]) {
      const outcome = await t.broker.reload(configFile(t, (raw) => {
        withConsole(raw);
        change(raw);
      }), {});
      expect(outcome).toMatchObject({ status: 'refused', problems: ['identity.issuers.sso: cannot change while the broker runs; restart the broker to apply it (or put back the running value to reload the rest)'] });
    }
    const other = await t.broker.reload(configFile(t, (raw) => {
      withConsole(raw);
      raw.identity.issuers[0].audiences = ['jit-broker', 'another'];
    }), {});
    expect(other).toMatchObject({ status: 'applied', changed: ['identity'] });
  });

  it('takes a value that only looks different (60m for 1h) as no change', async () => {
    t = await startTestBroker({ configure: (raw) => (raw.audit = { checkpointEvery: '1h' }) });
    const file = configFile(t, (raw) => (raw.audit = { checkpointEvery: '60m' }));
    expect(await t.broker.reload(file, {})).toMatchObject({ status: 'applied', changed: [] });
  });

  it('refuses development issuers where NODE_ENV is production, as a start does', async () => {
    t = await startTestBroker();
    const file = configFile(t, (raw) => {
      raw.identity.issuers.push(devIssuer(t as TestBroker));
    });
    const refused = await t.broker.reload(file, { NODE_ENV: 'production' });
    expect(refused).toMatchObject({ status: 'refused', problems: [expect.stringContaining('identity.issuers.2.dev: "dev-ci" is a development issuer, refused where NODE_ENV=production')] });
    // The caller logs the outcome (test/process/reload-signal.test.ts), the warning included.
    expect(await t.broker.reload(file, { NODE_ENV: 'production', BROKER_ALLOW_DEV_ISSUERS: 'true' })).toMatchObject({ status: 'applied', warnings: [expect.objectContaining({ fields: { dev_issuers: ['dev-ci'] } })] });
  });

  it('judges a request in flight by the rules it arrived under, and the next one by the new', async () => {
    // The CI issuer's keys are fetched from a server that answers only when the test says so:
    // the first request waits in identity verification while the reload happens.
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let arrived!: () => void;
    const waiting = new Promise<void>((resolve) => (arrived = resolve));
    const keys = createServer((_req, res) => {
      arrived();
      void released.then(() => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(t?.issuers.ci.jwks)));
    });
    await new Promise<void>((resolve) => keys.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => keys.close(() => resolve())));
    const jwksUri = `http://127.0.0.1:${(keys.address() as AddressInfo).port}/jwks`;
    const useKeyServer = (raw: Record<string, any>) => {
      delete raw.identity.issuers[0].jwks;
      raw.identity.issuers[0].jwksUri = jwksUri;
    };
    t = await startTestBroker({ configure: useKeyServer });

    const inFlight = ask(t, ['logs:read']);
    await waiting;
    const file = configFile(t, (raw) => {
      useKeyServer(raw);
      raw.policies[0].scopes = ['artifacts:read'];
    });
    expect(await t.broker.reload(file, {})).toMatchObject({ status: 'applied' });
    release();
    expect((await inFlight).status).toBe(201);
    expect((await ask(t, ['logs:read'])).status).toBe(403);
  });

  it('delivers later events to the webhooks of the new file, signed with the secret read at the reload', async () => {
    const before = await startReceiver();
    const after = await startReceiver();
    cleanups.push(before.close, after.close);
    const secretPath = (dir: string) => join(dir, 'webhook.secret');
    const writeSecret = (dir: string) => {
      const secret = randomBytes(32);
      writeFileSync(secretPath(dir), `whsec_${secret.toString('base64')}\n`, { mode: 0o600 });
      return secret;
    };
    const notify = (url: string, dir?: string) => (raw: Record<string, any>) => {
      raw.notify = { webhooks: [{ url, events: ['approval.requested'], ...(dir ? { secretFile: secretPath(dir) } : {}) }] };
    };
    t = await startTestBroker({ configure: notify(before.url('/hook')) });
    const pending = async () => {
      const response = await ask(t as TestBroker, ['model:deploy'], await t?.as.ml());
      expect(response.status).toBe(202);
      await t?.broker.notifier.idle();
    };
    await pending();
    expect(before.deliveries).toHaveLength(1);

    let secret = writeSecret(t.dir);
    expect(await t.broker.reload(configFile(t, notify(after.url('/hook'), t.dir)), {})).toMatchObject({ status: 'applied', changed: ['notify'] });
    const signed = (secretKey: Buffer) => {
      const delivery = after.deliveries.at(-1);
      const expected = createHmac('sha256', secretKey)
        .update(`${delivery?.headers['webhook-id']}.${delivery?.headers['webhook-timestamp']}.${delivery?.raw}`)
        .digest('base64');
      return delivery?.headers['webhook-signature'] === `v1,${expected}`;
    };
    await pending();
    expect(before.deliveries).toHaveLength(1);
    expect(after.deliveries).toHaveLength(1);
    expect(signed(secret)).toBe(true);

    secret = writeSecret(t.dir);
    expect(await t.broker.reload(configFile(t, notify(after.url('/hook'), t.dir)), {})).toMatchObject({ status: 'applied', changed: [] });
    await pending();
    expect(after.deliveries).toHaveLength(2);
    expect(signed(secret)).toBe(true);
  });

  it('refuses a webhook secret file that others may read, and keeps delivering as before', async () => {
    const receiver = await startReceiver();
    cleanups.push(receiver.close);
    t = await startTestBroker({ configure: (raw) => (raw.notify = { webhooks: [{ url: receiver.url('/hook'), events: ['approval.requested'] }] }) });
    const secret = join(t.dir, 'exposed.secret');
    writeFileSync(secret, `whsec_${randomBytes(32).toString('base64')}\n`, { mode: 0o644 });
    const file = configFile(t, (raw) => (raw.notify = { webhooks: [{ url: receiver.url('/other'), events: ['approval.requested'], secretFile: secret }] }));
    expect(await t.broker.reload(file, {})).toMatchObject({
      status: 'refused',
      problems: [expect.stringMatching(/^notify\.webhooks\.0\.secretFile: .*readable by other users/)],
    });
    expect((await ask(t, ['model:deploy'], await t.as.ml())).status).toBe(202);
    await t.broker.notifier.idle();
    expect(receiver.deliveries.map((delivery) => delivery.path)).toEqual(['/hook']);
  });
});
