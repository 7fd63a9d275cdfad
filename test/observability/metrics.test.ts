import { afterEach, describe, expect, it } from 'vitest';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { startReceiver } from '../helpers/receiver.js';

/** One sample's value in Prometheus text, or undefined when the series is absent. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const wanted = Object.entries(labels).map(([key, value]) => `${key}="${value}"`);
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = match[2] ? match[2].split(',') : [];
    if (have.length === wanted.length && wanted.every((pair) => have.includes(pair))) return Number(match[3]);
  }
  return undefined;
}

describe('/metrics', () => {
  let t: TestBroker;
  afterEach(async () => t?.close());
  const scrape = async () => (await t.http.get('/metrics')).text;
  const ask = async (token: string, body: Record<string, unknown>) =>
    t.http.post('/v1/credentials').set(bearer(token)).send({ task_id: 'metrics', audience: 'registry.acme.internal', ...body });

  it('names the process and Node.js metrics as prom-client does, for the standard dashboards', async () => {
    t = await startTestBroker();
    const text = await scrape();
    for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_start_time_seconds', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_version_info']) {
      expect(text, name).toMatch(new RegExp(`^# TYPE ${name} `, 'm'));
    }
    expect(text).not.toContain('broker_process_');
    expect(text).not.toMatch(/^# TYPE broker_nodejs/m);
  });

  it('keeps each broker\'s counters its own, and the process\'s metrics (one event-loop monitor) shared by every broker of the process', async () => {
    const other = await startTestBroker();
    try {
      t = await startTestBroker();
      await ask(await other.as.pipeline(), { scopes: ['artifacts:read'] });
      const mine = await scrape();
      expect(sample(mine, 'broker_requests_total', { outcome: 'issued' })).toBe(0);
      expect(mine).toMatch(/^nodejs_eventloop_lag_p99_seconds /m);
      // The same metric objects: each collection of prom-client's defaults enables an event-loop
      // delay monitor that nothing disables.
      const lag = 'nodejs_eventloop_lag_p99_seconds';
      expect(t.broker.metrics.registry.getSingleMetric(lag)).toBe(other.broker.metrics.registry.getSingleMetric(lag));
    } finally {
      await other.close();
    }
  });

  it('has every series of the broker\'s counters from the start, at zero', async () => {
    t = await startTestBroker();
    const text = await scrape();
    for (const outcome of ['issued', 'pending_approval', 'policy_denied', 'separation_of_duties', 'rate_limited', 'invalid_request', 'unavailable', 'error']) {
      expect(sample(text, 'broker_requests_total', { outcome }), outcome).toBe(0);
    }
    expect(sample(text, 'broker_issuances_total', { break_glass: 'false', approved: 'false' })).toBe(0);
    expect(sample(text, 'broker_issuances_total', { break_glass: 'false', approved: 'true' })).toBe(0);
    expect(sample(text, 'broker_issuances_total', { break_glass: 'true', approved: 'false' })).toBe(0);
    for (const decision of ['approve', 'deny']) expect(sample(text, 'broker_approvals_total', { decision })).toBe(0);
    for (const outcome of ['delivered', 'failed']) expect(sample(text, 'broker_webhook_deliveries_total', { outcome })).toBe(0);
    for (const reason of ['missing', 'invalid', 'jwks_unavailable']) expect(sample(text, 'broker_identity_rejections_total', { reason })).toBe(0);
    for (const job of ['expire-grants', 'expire-requests', 'rotate-keys']) {
      expect(sample(text, 'broker_scheduler_job_runs_total', { job, outcome: 'failed' }), job).toBe(0);
    }
  });

  it('counts requests by outcome, issuances by kind, and decisions', async () => {
    t = await startTestBroker();
    expect((await ask(await t.as.pipeline(), { scopes: ['artifacts:read'] })).status).toBe(201);
    expect((await ask(await t.as.pipeline(), { scopes: ['db:admin'] })).status).toBe(403);
    const pending = await ask(await t.as.ml(), { scopes: ['model:deploy'] });
    expect(pending.status).toBe(202);
    const denied = await ask(await t.as.ml(), { scopes: ['model:deploy'], task_id: 'second' });
    const approver = await t.as.person('alice', ['approvers', 'ml-release']);
    const decide = (id: string, decision: string, digest: string) =>
      t.http.post(`/v1/credentials/${id}/approvals`).set(bearer(approver)).send({ decision, reason: 'looked at it', digest });
    expect((await decide(pending.body.request_id, 'approve', pending.body.digest)).status).toBe(200);
    expect((await decide(denied.body.request_id, 'deny', denied.body.digest)).status).toBe(200);
    expect((await t.http.post(`/v1/credentials/${pending.body.request_id}/token`).set(bearer(await t.as.ml()))).status).toBe(201);
    const onCall = await t.as.person('olga', ['on-call']);
    expect((await ask(onCall, { scopes: ['logs:read'], break_glass: true, justification: 'logs are on fire since 03:10, looking now' })).status).toBe(201);
    expect((await ask(onCall, { scopes: ['logs:read'], break_glass: true, justification: 'too short' })).status).toBe(400);
    // The same ask through the token endpoint counts as a request too.
    const exchanged = await t.http.post('/oauth2/token').type('form').send({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: await t.as.pipeline(),
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      scope: 'artifacts:read',
      audience: 'registry.acme.internal',
      task_id: 'exchange',
    });
    expect(exchanged.status).toBe(200);

    const text = await scrape();
    expect(sample(text, 'broker_requests_total', { outcome: 'issued' })).toBe(3);
    expect(sample(text, 'broker_requests_total', { outcome: 'pending_approval' })).toBe(2);
    expect(sample(text, 'broker_requests_total', { outcome: 'policy_denied' })).toBe(1);
    expect(sample(text, 'broker_requests_total', { outcome: 'invalid_request' })).toBe(1);
    expect(sample(text, 'broker_issuances_total', { break_glass: 'false', approved: 'false' })).toBe(2);
    expect(sample(text, 'broker_issuances_total', { break_glass: 'false', approved: 'true' })).toBe(1);
    expect(sample(text, 'broker_issuances_total', { break_glass: 'true', approved: 'false' })).toBe(1);
    expect(sample(text, 'broker_approvals_total', { decision: 'approve' })).toBe(1);
    expect(sample(text, 'broker_approvals_total', { decision: 'deny' })).toBe(1);
  });

  it('counts webhook deliveries by outcome, after retries', async () => {
    const good = await startReceiver();
    const bad = await startReceiver(() => 500);
    try {
      t = await startTestBroker({
        configure: (raw) =>
          (raw.notify = {
            retries: 1,
            webhooks: [
              { url: good.url('/ok'), events: ['approval.requested'] },
              { url: bad.url('/broken'), events: ['approval.requested'] },
            ],
          }),
      });
      expect((await ask(await t.as.ml(), { scopes: ['model:deploy'] })).status).toBe(202);
      await t.broker.notifier.idle();
      const text = await scrape();
      expect(sample(text, 'broker_webhook_deliveries_total', { outcome: 'delivered' })).toBe(1);
      expect(sample(text, 'broker_webhook_deliveries_total', { outcome: 'failed' })).toBe(1);
      expect(bad.attempts).toBe(2);
    } finally {
      await good.close();
      await bad.close();
    }
  });

  it('labels a route by its template whatever the outcome: 401 before the route, 403, 404, 200', async () => {
    t = await startTestBroker();
    const pending = await ask(await t.as.ml(), { scopes: ['model:deploy'] });
    const id = pending.body.request_id as string;
    await t.http.post(`/v1/credentials/${id}/approvals`).send({});
    await t.http.post(`/v1/credentials/${id}/approvals`).set(bearer(await t.as.person('bob', ['approvers']))).send({ decision: 'approve', reason: 'x', digest: pending.body.digest });
    await t.http.post(`/v1/credentials/${id}/approvals`).set(bearer(await t.as.person('alice', ['approvers', 'ml-release']))).send({ decision: 'approve', reason: 'x', digest: pending.body.digest });
    await t.http.get(`/v1/credentials/${id}`);
    await t.http.get('/v1/credentials/no-such-id').set(bearer(await t.as.ml()));
    await t.http.get('/no/such/path');
    await t.http.get('/v1/nothing-here').set(bearer(await t.as.ml()));

    const text = await scrape();
    const approvals = { method: 'POST', route: '/v1/credentials/{id}/approvals' };
    expect(sample(text, 'broker_http_requests_total', { ...approvals, status: '401' })).toBe(1);
    expect(sample(text, 'broker_http_requests_total', { ...approvals, status: '404' })).toBe(1); // bob may not approve model:deploy
    expect(sample(text, 'broker_http_requests_total', { ...approvals, status: '200' })).toBe(1);
    const request = { method: 'GET', route: '/v1/credentials/{id}' };
    expect(sample(text, 'broker_http_requests_total', { ...request, status: '401' })).toBe(1);
    expect(sample(text, 'broker_http_requests_total', { ...request, status: '404' })).toBe(1);
    expect(sample(text, 'broker_http_requests_total', { method: 'GET', route: 'unmatched', status: '404' })).toBe(2);
    const routes = new Set([...text.matchAll(/^broker_http_requests_total\{[^}]*route="([^"]+)"/gm)].map((match) => match[1]));
    expect([...routes].sort()).toEqual(['/v1/credentials', '/v1/credentials/{id}', '/v1/credentials/{id}/approvals', 'unmatched']);
  });
});
