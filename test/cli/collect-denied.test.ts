import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseConfig, bearer, liveClock, listen, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { jit } from '../helpers/jit-process.js';

/** A request the broker denies when it is collected (a reload took its scope since): jit says why, exit 3, as for any refusal. */

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

describe('jit collect', () => {
  it('exits 3 with the broker\'s reason when the request is denied at collection', async () => {
    const pending = await t.http.post('/v1/credentials').set(bearer(await t.as.ml())).send({ task_id: 'deploy', scopes: ['model:deploy'], audience: 'registry.acme.internal' });
    const approver = await t.as.person('carol', ['approvers', 'ml-release']);
    await t.http.post(`/v1/credentials/${pending.body.request_id}/approvals`).set(bearer(approver)).send({ decision: 'approve', reason: 'ok', digest: pending.body.digest });
    const raw = baseConfig(t.dir, t.issuers, t.db.url) as Record<string, any>;
    raw.policies.find((policy: { id: string }) => policy.id === 'ml-main').scopes = ['model:train'];
    const file = join(t.dir, 'reloaded.yaml');
    writeFileSync(file, YAML.stringify(raw));
    expect(await t.broker.reload(file, {})).toMatchObject({ status: 'applied' });

    const collected = await jit(['collect', pending.body.request_id, '--wait', '0'], { env: { BROKER_URL: server.url, BROKER_IDENTITY_TOKEN: await t.as.ml() } });
    expect(collected.code).toBe(3);
    expect(collected.stdout).toBe('');
    expect(collected.stderr).toMatch(/no longer be collected.*model:deploy/);
  });
});
