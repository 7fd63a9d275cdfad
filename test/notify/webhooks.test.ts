import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import YAML from 'yaml';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config/index.js';
import { compileWebhooks, createNotifier } from '../../src/notify/index.js';
import { createLogger } from '../../src/observability/index.js';
import { DEFAULT_ACTOR, baseConfig, bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { startReceiver } from '../helpers/receiver.js';
import { allEvents } from '../helpers/records.js';

const deploy = { task_id: 'deploy-7', scopes: ['model:deploy'], audience: 'registry.acme.internal', justification: 'release 7, see change 123' };
const SECRET_PATH = '/hooks/T000-s3cr3t-webhook-token';

let t: TestBroker | undefined;
let receiver: Awaited<ReturnType<typeof startReceiver>> | undefined;
afterEach(async () => {
  await t?.close();
  await receiver?.close();
});

/** The `notify` section of these tests: one webhook to the receiver, for the request events. */
// The receiver answers at once; a timeout far above that keeps a slow, loaded test run from
// turning one delivery into a timeout and a resend. The hanging receiver's tests set their own.
const notifying = (url: string, notify: Record<string, unknown> = {}, webhook: Record<string, unknown> = {}) => ({
  timeout: '5s',
  retries: 2,
  webhooks: [{ url, events: ['approval.requested', 'request.approved', 'request.denied', 'breakglass.used'], ...webhook }],
  ...notify,
});

async function brokerNotifying(status?: () => number, notify: Record<string, unknown> = {}, webhook: Record<string, unknown> = {}) {
  receiver = await startReceiver(status);
  const url = receiver.url(SECRET_PATH);
  t = await startTestBroker({
    configure(config) {
      config.notify = notifying(url, notify, webhook);
    },
  });
  return t;
}

/** A Standard Webhooks secret in a file of the given mode. */
function secretFile(dir: string, text = `whsec_${randomBytes(32).toString('base64')}`, mode = 0o600) {
  const path = join(dir, 'webhook.secret');
  writeFileSync(path, `${text}\n`, { mode });
  return { path, key: Buffer.from(text.slice('whsec_'.length), 'base64') };
}

describe('webhooks', () => {
  it('delivers approval.requested and the decision, with the contract\'s body and never a token', async () => {
    const t = await brokerNotifying();
    const pending = await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send(deploy);
    const approver = await t.as.person('alice', ['approvers', 'ml-release']);
    await t.http.post(`/v1/credentials/${pending.body.request_id}/approvals`).set(bearer(approver)).send({ decision: 'approve', reason: 'ok', digest: pending.body.digest });
    const collected = await t.http.post(`/v1/credentials/${pending.body.request_id}/token`).set(bearer(await t.as.ml()));
    await t.broker.notifier.idle();

    const [requested, approved] = receiver!.deliveries;
    expect(receiver!.deliveries.map((d) => d.body.event)).toEqual(['approval.requested', 'request.approved']);
    expect(requested?.path).toBe(SECRET_PATH);
    expect(requested?.headers['content-type']).toBe('application/json');
    expect(requested?.headers['webhook-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(requested?.body).toEqual({
      event: 'approval.requested',
      at: new Date(t.clock()).toISOString(),
      request_id: pending.body.request_id,
      requester: { iss: 'https://ci.test', sub: 'repo:acme/ml:ref:refs/heads/main' },
      initiator: DEFAULT_ACTOR,
      task_id: 'deploy-7',
      scopes: ['model:deploy'],
      audience: 'registry.acme.internal',
      ttl_seconds: 600,
      break_glass: false,
      justification: 'release 7, see change 123',
      digest: pending.body.digest,
      approvals_required: 1,
      expires_at: pending.body.expires_at,
    });
    expect(approved?.body.request_id).toBe(pending.body.request_id);
    const everything = JSON.stringify(receiver!.deliveries);
    expect(everything).not.toContain((collected.body.access_token as string).split('.')[2]);
    expect(everything).not.toContain('eyJ');
  });

  it('links to the request\'s page in the console, built from the broker\'s issuer, when there is a console', async () => {
    const t = await brokerNotifying();
    await t.restart((config) => {
      config.issuer = 'https://broker.acme.example/';
      const issuers = (config.identity as { issuers: Record<string, unknown>[] }).issuers;
      issuers[1] = { ...issuers[1], audiences: ['jit-broker', 'jit-console'] };
      config.console = { issuer: 'sso', clientId: 'jit-console' };
    });
    const pending = await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send(deploy);
    await t.broker.notifier.idle();
    expect(receiver!.deliveries[0]?.body.url).toBe(`https://broker.acme.example/console/requests/${pending.body.request_id}`);
  });

  it('gives no url without a console', async () => {
    const t = await brokerNotifying();
    await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send(deploy);
    await t.broker.notifier.idle();
    expect(receiver!.deliveries[0]?.body).not.toHaveProperty('url');
  });

  it('delivers request.denied', async () => {
    const t = await brokerNotifying();
    const pending = await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send(deploy);
    const approver = await t.as.person('alice', ['approvers', 'ml-release']);
    await t.http.post(`/v1/credentials/${pending.body.request_id}/approvals`).set(bearer(approver)).send({ decision: 'deny', reason: 'no', digest: pending.body.digest });
    await t.broker.notifier.idle();
    expect(receiver!.deliveries.map((d) => d.body.event)).toEqual(['approval.requested', 'request.denied']);
  });

  it('delivers request.denied when collection finds the running configuration no longer grants the approved request', async () => {
    const t = await brokerNotifying();
    const pending = await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send(deploy);
    const approver = await t.as.person('alice', ['approvers', 'ml-release']);
    await t.http.post(`/v1/credentials/${pending.body.request_id}/approvals`).set(bearer(approver)).send({ decision: 'approve', reason: 'ok', digest: pending.body.digest });
    // A reload takes model:deploy from the ML pipeline's policy, webhooks unchanged.
    const raw = baseConfig(t.dir, t.issuers, t.db.url) as Record<string, any>;
    raw.notify = notifying(receiver!.url(SECRET_PATH));
    const ml = raw.policies.find((p: { id: string }) => p.id === 'ml-main');
    ml.scopes = ml.scopes.filter((scope: string) => scope !== 'model:deploy');
    const file = join(t.dir, 'reloaded.yaml');
    writeFileSync(file, YAML.stringify(raw));
    expect(await t.broker.reload(file, {})).toMatchObject({ status: 'applied' });

    const collected = await t.http.post(`/v1/credentials/${pending.body.request_id}/token`).set(bearer(await t.as.ml()));
    expect(collected.status).toBe(409);
    await t.broker.notifier.idle();
    expect(receiver!.deliveries.map((d) => d.body.event)).toEqual(['approval.requested', 'request.approved', 'request.denied']);
    expect(receiver!.deliveries[2]?.body).toMatchObject({ request_id: pending.body.request_id, scopes: ['model:deploy'] });
  });

  it('retries a failing receiver, then logs and audits the failure, naming only the origin', async () => {
    let calls = 0;
    const t = await brokerNotifying(() => (++calls < 10 ? 503 : 204));
    const pending = await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send(deploy);
    expect(pending.status).toBe(202);
    await t.broker.notifier.idle();
    expect(receiver!.attempts).toBe(3); // one try and two retries
    const failure = (await allEvents(t)).find((e) => e.type === 'notify.failed');
    expect(failure).toMatchObject({
      requestId: pending.body.request_id,
      data: { event: 'approval.requested', target: receiver!.url(''), attempts: 3, problem: 'HTTP 503' },
    });
    expect(t.logs.some((line) => line.includes('webhook delivery failed'))).toBe(true);
    expect(t.logs.join('\n')).not.toContain('s3cr3t');
    expect(JSON.stringify((await allEvents(t)))).not.toContain('s3cr3t');
  });

  it('waits before each retry as the README says: 1 s, then four times longer each time', async () => {
    const t = await brokerNotifying(() => 503, { retries: 0 });
    const pending = await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send(deploy);
    await t.broker.notifier.idle();
    const before = receiver!.attempts; // the broker's own delivery, tried once
    const config = { ...t.config, notify: { ...t.config.notify, retries: 3 } };
    const waits: { afterAttempts: number; ms: number }[] = [];
    const notifier = createNotifier({
      settings: () => ({ config, webhooks: compileWebhooks(config.notify) }),
      store: t.broker.store,
      logger: createLogger({ level: 'silent' }),
      clock: t.clock,
      sleep: async (ms) => {
        waits.push({ afterAttempts: receiver!.attempts - before, ms });
        t.clock.advance(ms);
      },
    });
    notifier.notify('approval.requested', (await t.broker.store.requests.get(pending.body.request_id))!);
    await notifier.idle();
    expect(receiver!.attempts - before).toBe(4); // one try and three retries
    expect(waits).toEqual([
      { afterAttempts: 1, ms: 1_000 },
      { afterAttempts: 2, ms: 4_000 },
      { afterAttempts: 3, ms: 16_000 },
    ]);
  });

  it('takes a 3xx as a failed attempt, retried, and follows no redirect: the event reaches nowhere else', async () => {
    const servers = [] as ReturnType<typeof createServer>[];
    const serve = async (answer: (res: ServerResponse) => void) => {
      const server = createServer((req, res) => {
        req.resume();
        req.on('end', () => answer(res));
      });
      servers.push(server);
      await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
      return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    };
    try {
      let elsewhereCalls = 0;
      const elsewhere = await serve((res) => {
        elsewhereCalls += 1;
        res.writeHead(204).end();
      });
      const answers: number[] = [];
      let status = 0;
      const url = `${await serve((res) => {
        answers.push(status);
        res.writeHead(status, { location: `${elsewhere}/collect` }).end();
      })}/hook`;
      const t = await brokerNotifying();
      const pending = await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send(deploy);
      const request = (await t.broker.store.requests.get(pending.body.request_id))!;
      await t.broker.notifier.idle();
      const config = { ...t.config, notify: { ...t.config.notify, retries: 1, webhooks: [{ url, events: ['approval.requested' as const], format: 'json' as const }] } };
      const outcomes: string[] = [];
      const notifier = createNotifier({
        settings: () => ({ config, webhooks: compileWebhooks(config.notify) }),
        store: t.broker.store,
        logger: createLogger({ level: 'silent' }),
        clock: t.clock,
        backoffMs: 1,
        observer: { webhookDelivered: (outcome) => outcomes.push(outcome) },
      });
      // 307 and 308 would send the same POST, body and all, wherever the Location says; 302 a GET.
      for (status of [302, 307, 308]) {
        notifier.notify('approval.requested', request);
        await notifier.idle();
      }
      expect(elsewhereCalls).toBe(0);
      expect(answers).toEqual([302, 302, 307, 307, 308, 308]); // each tried and retried, none taken as delivered
      expect(outcomes).toEqual(['failed', 'failed', 'failed']);
      const failures = (await allEvents(t)).filter((e) => e.type === 'notify.failed').map((e) => e.data);
      expect(failures).toEqual([302, 307, 308].map((code) => ({ event: 'approval.requested', target: new URL(url).origin, attempts: 2, problem: `HTTP ${code}` })));
    } finally {
      for (const server of servers) {
        server.closeAllConnections();
        await new Promise((done) => server.close(done));
      }
    }
  });

  it('never delays the request that caused it, even when the receiver hangs', async () => {
    const t = await brokerNotifying(() => 0, { timeout: '2s', retries: 0 });
    const pending = await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send(deploy);
    expect(pending.status).toBe(202);
    // The answer is here while the delivery is still hanging: it was not waited for.
    expect((await allEvents(t)).some((e) => e.type === 'notify.failed')).toBe(false);
    await t.broker.notifier.idle();
    expect((await allEvents(t)).find((e) => e.type === 'notify.failed')?.data).toMatchObject({ problem: 'timeout', attempts: 1 });
  });

  it('holds a bounded backlog for a receiver that is down: past it, a delivery fails at once, audited', async () => {
    const t = await brokerNotifying(() => 0, { timeout: '2s', retries: 0 });
    const pending = await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send(deploy);
    const request = await t.broker.store.requests.get(pending.body.request_id);
    const notifier = createNotifier({
      settings: () => ({ config: t.config, webhooks: compileWebhooks(t.config.notify) }),
      store: t.broker.store,
      logger: createLogger({ level: 'silent' }),
      clock: t.clock,
      maxPending: 2,
    });
    for (let i = 0; i < 3; i += 1) notifier.notify('approval.requested', request!);
    await notifier.idle();
    await t.broker.notifier.idle();
    const failures = (await allEvents(t)).filter((e) => e.type === 'notify.failed').map((e) => e.data);
    expect(failures).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ problem: 'backlog', attempts: 0, target: new URL(receiver!.url(SECRET_PATH)).origin }),
        expect.objectContaining({ problem: 'timeout', attempts: 1 }),
      ]),
    );
    expect(failures.filter((f) => f.problem === 'backlog')).toHaveLength(1);
  });

  it('bounds the backlog per receiver: one that hangs never costs another its breakglass.used', async () => {
    const healthy = await startReceiver();
    try {
      const t = await brokerNotifying(() => 0, { timeout: '2s', retries: 0 });
      const pending = await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send(deploy);
      const request = (await t.broker.store.requests.get(pending.body.request_id))!;
      const hanging = t.config.notify.webhooks[0]!;
      const config = { ...t.config, notify: { ...t.config.notify, webhooks: [{ ...hanging, events: ['approval.requested' as const] }, { url: healthy.url('/siem'), events: ['breakglass.used' as const], format: 'json' as const }] } };
      const notifier = createNotifier({
        settings: () => ({ config, webhooks: compileWebhooks(config.notify) }),
        store: t.broker.store,
        logger: createLogger({ level: 'silent' }),
        clock: t.clock,
        maxPending: 2,
      });
      // The hanging receiver's backlog is full, and one more of its own is shed...
      for (let i = 0; i < 3; i += 1) notifier.notify('approval.requested', request);
      // ...while the other receiver still gets the alert it listens for.
      notifier.notify('breakglass.used', { ...request, breakGlass: true });
      await notifier.idle();
      await t.broker.notifier.idle();
      expect(healthy.deliveries.map((d) => d.body.event)).toEqual(['breakglass.used']);
      const shed = (await allEvents(t)).filter((e) => e.type === 'notify.failed' && e.data.problem === 'backlog').map((e) => e.data);
      expect(shed).toEqual([expect.objectContaining({ event: 'approval.requested', target: new URL(hanging.url).origin })]);
    } finally {
      await healthy.close();
    }
  });

  it('sends a slow receiver a few deliveries at a time, never a connection per event', async () => {
    // A receiver that takes its time over each delivery, counting how many it holds at once.
    let open = 0;
    let most = 0;
    const server = createServer((req, res) => {
      open += 1;
      most = Math.max(most, open);
      req.resume();
      setTimeout(() => {
        open -= 1;
        res.writeHead(204).end();
      }, 50);
    });
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
      const t = await startTestBroker({ configure: (config) => (config.notify = notifying(url, { retries: 0 })) });
      const pending = await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send(deploy);
      await t.broker.notifier.idle();
      const request = (await t.broker.store.requests.get(pending.body.request_id))!;
      const outcomes: string[] = [];
      const notifier = createNotifier({
        settings: () => ({ config: t.config, webhooks: compileWebhooks(t.config.notify) }),
        store: t.broker.store,
        logger: createLogger({ level: 'silent' }),
        clock: t.clock,
        observer: { webhookDelivered: (outcome) => outcomes.push(outcome) },
      });
      most = 0;
      for (let i = 0; i < 40; i += 1) notifier.notify('approval.requested', request);
      await notifier.idle();
      // Every one delivered, in turn: four connections at most, as the README says, not forty.
      expect(outcomes).toEqual(Array(40).fill('delivered'));
      expect(most).toBeGreaterThan(0);
      expect(most).toBeLessThanOrEqual(4);
      await t.close();
    } finally {
      server.closeAllConnections();
      await new Promise((done) => server.close(done));
    }
  });

  it('signs each delivery with the secret file, as Standard Webhooks receivers verify it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'jit-webhook-secret-'));
    try {
      const secret = secretFile(dir);
      const t = await brokerNotifying(undefined, {}, { secretFile: secret.path });
      await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send(deploy);
      await t.broker.notifier.idle();

      const [delivery] = receiver!.deliveries;
      const id = delivery?.headers['webhook-id'];
      const timestamp = delivery?.headers['webhook-timestamp'];
      const expected = createHmac('sha256', secret.key).update(`${id}.${timestamp}.${delivery?.raw}`).digest('base64');
      expect(delivery?.headers['webhook-signature']).toBe(`v1,${expected}`);
      expect(Number(timestamp)).toBe(Math.floor(t.clock() / 1000));
      expect(t.logs.join('\n')).not.toContain(expected);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('signs each attempt when it is sent: a retry minutes later carries a fresh timestamp and signature, and the same id', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'jit-webhook-secret-'));
    const attempts: { headers: Record<string, string | string[] | undefined>; raw: string; at: number }[] = [];
    let clock: (() => number) & { advance(ms: number): void };
    const server = createServer((req, res) => {
      let raw = '';
      req.on('data', (chunk: Buffer) => (raw += chunk.toString()));
      req.on('end', () => {
        attempts.push({ headers: req.headers, raw, at: clock() });
        clock.advance(6 * 60_000); // each answer minutes late: the receiver is struggling
        res.writeHead(attempts.length < 3 ? 503 : 204).end();
      });
    });
    await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
    try {
      const secret = secretFile(dir);
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
      const t = await startTestBroker({ configure: (config) => (config.notify = notifying(url, { retries: 3 }, { secretFile: secret.path })) });
      clock = t.clock;
      const pending = await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send(deploy);
      const notifier = createNotifier({ settings: () => ({ config: t.config, webhooks: compileWebhooks(t.config.notify) }), store: t.broker.store, logger: createLogger({ level: 'silent' }), clock: t.clock, backoffMs: 1 });
      await t.broker.notifier.idle();
      attempts.length = 0;
      notifier.notify('approval.requested', (await t.broker.store.requests.get(pending.body.request_id))!);
      await notifier.idle();
      expect(attempts).toHaveLength(3);
      expect(new Set(attempts.map((a) => a.headers['webhook-id'])).size).toBe(1);
      for (const { headers, raw, at } of attempts) {
        expect(Number(headers['webhook-timestamp'])).toBe(Math.floor(at / 1000));
        const signed = createHmac('sha256', secret.key).update(`${headers['webhook-id']}.${headers['webhook-timestamp']}.${raw}`).digest('base64');
        expect(headers['webhook-signature']).toBe(`v1,${signed}`);
      }
      await t.close();
    } finally {
      server.closeAllConnections();
      await new Promise((done) => server.close(done));
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('sends no signature for a webhook without a secret', async () => {
    const t = await brokerNotifying();
    await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send(deploy);
    await t.broker.notifier.idle();
    expect(receiver!.deliveries[0]?.headers).not.toHaveProperty('webhook-signature');
  });

  it.each([
    ['missing', (dir: string) => join(dir, 'absent.secret'), /no such file/],
    ['readable by others', (dir: string) => secretFile(dir, undefined, 0o644).path, /readable by other users/],
    ['not a whsec_ secret', (dir: string) => secretFile(dir, 'hunter2').path, /not a webhook secret/],
    ['too short', (dir: string) => secretFile(dir, `whsec_${randomBytes(8).toString('base64')}`).path, /not a webhook secret/],
    ['a byte short of 24', (dir: string) => secretFile(dir, `whsec_${randomBytes(23).toString('base64')}`).path, /not a webhook secret/],
  ])('refuses to start when the secret file is %s', async (_case, makePath, reason) => {
    const dir = mkdtempSync(join(tmpdir(), 'jit-webhook-secret-'));
    try {
      const path = makePath(dir);
      const started = startTestBroker({
        dir,
        configure(config) {
          config.notify = { webhooks: [{ url: 'https://hooks.example/broker', events: ['breakglass.used'], secretFile: path }] };
        },
      });
      const error = await started.then(() => undefined, (e: unknown) => e);
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).problems).toEqual([expect.stringMatching(reason)]);
      expect((error as ConfigError).problems[0]).toMatch(/^notify\.webhooks\.0\.secretFile: /);
      expect((error as ConfigError).message).not.toContain('hunter2');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
