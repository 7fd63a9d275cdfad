import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENGINE } from '../helpers/engine.js';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';

/**
 * One broker with a mixed history: plain, approved, denied, break-glass, revoked and expired
 * grants. Every assertion below is about what an auditor gets back from it.
 */

let t: TestBroker;
const ids: Record<string, string> = {};
const TRICKY = 'outage: "db-7", rack 3,\nsee =HYPERLINK("http://x") for details';

beforeAll(async () => {
  t = await startTestBroker();
  const post = async (token: string, body: Record<string, unknown>) => (await t.http.post('/v1/credentials').set(bearer(token)).send(body)).body;
  const base = { audience: 'registry.acme.internal' };
  const approver = await t.as.person('alice', ['approvers', 'ml-release']);

  ids.plain = (await post(await t.as.pipeline(), { ...base, task_id: 'plain', scopes: ['artifacts:read'] })).request_id;
  t.clock.advance(1_000);
  const pending = await post(await t.as.ml(), { ...base, task_id: 'approved', scopes: ['model:deploy'], justification: 'release 7' });
  await t.http.post(`/v1/credentials/${pending.request_id}/approvals`).set(bearer(approver)).send({ decision: 'approve', reason: 'ok', digest: pending.digest });
  await t.http.post(`/v1/credentials/${pending.request_id}/token`).set(bearer(await t.as.ml()));
  ids.approved = pending.request_id;
  t.clock.advance(1_000);
  const doomed = await post(await t.as.pipeline({ repository: 'acme/db' }, 'repo:acme/db:x'), { ...base, task_id: 'denied', scopes: ['db:admin'] });
  await t.http.post(`/v1/credentials/${doomed.request_id}/approvals`).set(bearer(await t.as.person('frank', ['approvers']))).send({ decision: 'deny', reason: 'no', digest: doomed.digest });
  ids.denied = doomed.request_id;
  t.clock.advance(1_000);
  ids.breakGlass = (await post(await t.as.person('olga', ['on-call']), { ...base, task_id: 'incident', scopes: ['logs:read'], break_glass: true, justification: TRICKY })).request_id;
  t.clock.advance(1_000);
  ids.revoked = (await post(await t.as.pipeline(), { ...base, task_id: 'revoked', scopes: ['logs:read'] })).request_id;
  await t.http.post(`/v1/credentials/${ids.revoked}/revoke`).set(bearer(await t.as.pipeline())).send({ reason: 'leaked in a log' });
  t.clock.advance(1_000);
  ids.expired = (await post(await t.as.pipeline(), { ...base, task_id: 'expired', scopes: ['artifacts:read', 'logs:read'], ttl_seconds: 5 })).request_id;
  t.clock.advance(10_000);
  await t.broker.scheduler.runAll();
});
afterAll(async () => {
  await t.close();
});

const auditor = () => t.as.person('ivy', ['auditors']);
const get = async (path: string, token?: string) => t.http.get(path).set(bearer(token ?? (await auditor())));
type Row = { request_id: string; status: string; approvers: { sub: string }[]; task_id: string; break_glass: boolean; revoke_reason?: string };
const rows = async (query = '') => ((await get(`/v1/audit/issuances${query}`)).body.items as Row[]);
const taskIds = async (query = '') => (await rows(query)).map((row) => row.task_id);

describe('GET /v1/audit/issuances', () => {
  it('has one row per minted token, with its status and approvers', async () => {
    const all = await rows();
    expect(all.map((r) => [r.task_id, r.status])).toEqual([
      ['plain', 'issued'],
      ['approved', 'issued'],
      ['incident', 'issued'],
      ['revoked', 'revoked'],
      ['expired', 'expired'],
    ]);
    expect(all.find((r) => r.task_id === 'approved')).toMatchObject({
      requester: { iss: 'https://ci.test', sub: 'repo:acme/ml:ref:refs/heads/main' },
      scopes: ['model:deploy'],
      audience: 'registry.acme.internal',
      justification: 'release 7',
      approvers: [{ iss: 'https://sso.test', sub: 'alice', at: expect.any(String) }],
      break_glass: false,
      issued_at: expect.any(String),
      expires_at: expect.any(String),
      jti: expect.any(String),
    });
    expect(all.find((r) => r.task_id === 'incident')).toMatchObject({ break_glass: true, approvers: [], justification: TRICKY });
    expect(all.find((r) => r.task_id === 'revoked')).toMatchObject({ revoke_reason: 'leaked in a log', revoked_at: expect.any(String) });
    expect(all.some((r) => r.request_id === ids.denied)).toBe(false); // denied: nothing was minted
  });

  it('filters by subject, scope, status, break-glass and time', async () => {
    expect(await taskIds('?subject=repo:acme/app:ref:refs/heads/main')).toEqual(['plain', 'revoked', 'expired']);
    expect(await taskIds('?scope=logs:read')).toEqual(['incident', 'revoked', 'expired']);
    expect(await taskIds('?status=revoked')).toEqual(['revoked']);
    expect(await taskIds('?status=expired')).toEqual(['expired']);
    expect(await taskIds('?status=issued&scope=logs:read')).toEqual(['incident']);
    expect(await taskIds('?scope=logs:read&subject=repo:acme/app:ref:refs/heads/main')).toEqual(['revoked', 'expired']);
    expect(await taskIds('?break_glass=true')).toEqual(['incident']);
    expect(await taskIds('?break_glass=false&scope=artifacts:read')).toEqual(['plain', 'expired']);
    const all = await get('/v1/audit/issuances');
    const [, second, third] = all.body.items as { issued_at: string }[];
    expect(await taskIds(`?since=${second?.issued_at}&until=${third?.issued_at}`)).toEqual(['approved']);
  });

  it('counts an issued token past its expiry as expired before the scheduler has swept it', async () => {
    t.clock.advance(15 * 60_000);
    try {
      expect(await taskIds('?status=issued')).toEqual([]);
      expect((await taskIds('?status=expired')).sort()).toEqual(['approved', 'expired', 'incident', 'plain']);
    } finally {
      t.clock.advance(-15 * 60_000);
    }
  });

  it('pages with a cursor: every row exactly once, for each filter', async () => {
    for (const query of ['', 'scope=logs:read', 'status=issued', 'status=expired', 'break_glass=false', 'subject=repo:acme/app:ref:refs/heads/main', 'subject=repo:acme/app:ref:refs/heads/main&scope=logs:read']) {
      const expected = await taskIds(query ? `?${query}` : '');
      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const page: { body: { items: Row[]; next_cursor: string | null } } = await get(
          `/v1/audit/issuances?limit=2${query ? `&${query}` : ''}${cursor ? `&cursor=${cursor}` : ''}`,
        );
        expect(page.body.items.length).toBeLessThanOrEqual(2);
        seen.push(...page.body.items.map((r) => r.task_id));
        cursor = page.body.next_cursor;
      } while (cursor);
      expect(seen).toEqual(expected);
    }
  });

  it('streams every match as NDJSON, whatever the limit', async () => {
    const response = await get('/v1/audit/issuances?format=ndjson&limit=1&scope=logs:read');
    expect(response.headers['content-type']).toMatch(/^application\/x-ndjson/);
    const lines = response.text.trim().split('\n').map((line) => JSON.parse(line) as Row);
    expect(lines.map((l) => l.task_id)).toEqual(['incident', 'revoked', 'expired']);
  });

  it('streams CSV that escapes commas, quotes and newlines, and defuses formulas', async () => {
    const response = await get('/v1/audit/issuances?format=csv&break_glass=true');
    expect(response.headers['content-type']).toMatch(/^text\/csv/);
    expect(response.headers['content-disposition']).toMatch(/^attachment; filename=issuances-[\w-]+\.csv$/);
    expect(response.text.startsWith(
      'jti,request_id,requester_iss,requester_sub,task_id,scopes,audience,justification,issued_at,expires_at,status,approvers,break_glass,revoked_at,revoke_reason,authorization_details,act\r\n',
    )).toBe(true);
    // One record: the newline inside the quoted field does not end it.
    expect(response.text.split('\r\n').filter(Boolean)).toHaveLength(2);
    expect(response.text).toContain(`,"outage: ""db-7"", rack 3,\nsee =HYPERLINK(""http://x"") for details",`);

    const formula = await t.http
      .post('/v1/credentials')
      .set(bearer(await t.as.person('oscar', ['on-call'])))
      .send({ task_id: 'formula', scopes: ['logs:read'], audience: 'x', break_glass: true, justification: '=cmd|"/c calc"!A1 and more words' });
    expect(formula.status).toBe(201);
    const defused = await get('/v1/audit/issuances?format=csv&subject=oscar');
    expect(defused.text).toContain(`"'=cmd|""/c calc""!A1 and more words"`);
  });

  it('is for auditors and admins only', async () => {
    expect((await get('/v1/audit/issuances', await t.as.person('root', ['admins']))).status).toBe(200);
    for (const token of [await t.as.person('alice', ['approvers', 'ml-release']), await t.as.pipeline(), await t.as.pipeline({}, 'resource-server:x')]) {
      const response = await get('/v1/audit/issuances', token);
      expect(response.status).toBe(403);
      expect(response.body.type).toMatch(/policy_denied$/);
      expect((await get('/v1/audit/issuances?format=csv', token)).status).toBe(403);
      expect((await get('/v1/audit/events', token)).status).toBe(403);
      expect((await get('/v1/audit/verify', token)).status).toBe(403);
      // Who may ask comes before what is asked: a malformed query teaches an outsider nothing.
      expect((await get('/v1/audit/events?since=yesterday&bogus=1', token)).status).toBe(403);
    }
  });

  it('answers 400 naming the bad filter', async () => {
    const cases = [
      ['?status=lost', '#/status'],
      ['?since=yesterday', '#/since'],
      ['?limit=0', '#/limit'],
      ['?limit=abc', '#/limit'],
      ['?limit=5&limit=6', '#/limit'],
      ['?format=xml', '#/format'],
      ['?cursor=abc', '#/cursor'],
      ['?colour=blue', '#/colour'],
    ];
    for (const [query, pointer] of cases) {
      const response = await get(`/v1/audit/issuances${query}`);
      expect(response.status, query).toBe(400);
      expect(response.body.type).toMatch(/invalid_request$/);
      expect(response.body.errors.map((e: { pointer: string }) => e.pointer), query).toEqual([pointer]);
    }
  });
});

describe('GET /v1/audit/events', () => {
  it('lists the chain, filtered by type and request, paged by seq', async () => {
    const byRequest = await get(`/v1/audit/events?request_id=${ids.approved}`);
    expect(byRequest.body.items.map((e: { type: string }) => e.type)).toEqual([
      'request.created',
      'approval.recorded',
      'request.approved',
      'token.issued',
    ]);
    expect(byRequest.body.items[1]).toMatchObject({
      seq: expect.any(Number),
      at: expect.any(String),
      actor: { iss: 'https://sso.test', sub: 'alice' },
      request_id: ids.approved,
      data: { decision: 'approve', reason: 'ok' },
      prev_hash: expect.stringMatching(/^[0-9a-f]{64}$/),
      hash: expect.stringMatching(/^[0-9a-f]{64}$/),
    });
    const expired = await get('/v1/audit/events?type=grant.expired');
    expect(expired.body.items.map((e: { request_id: string }) => e.request_id)).toEqual([ids.expired]);

    const all = (await get('/v1/audit/events?limit=1000')).body.items as { seq: number }[];
    const paged: number[] = [];
    let cursor: string | null = null;
    do {
      const page: { body: { items: { seq: number }[]; next_cursor: string | null } } = await get(`/v1/audit/events?limit=7${cursor ? `&cursor=${cursor}` : ''}`);
      paged.push(...page.body.items.map((e) => e.seq));
      cursor = page.body.next_cursor;
    } while (cursor);
    expect(paged).toEqual(all.map((e) => e.seq));
    expect(paged).toEqual(Array.from({ length: paged.length }, (_, i) => i + 1));
  });

  it('judges since and until as times, at any offset: one in year 10000 UTC is after every event', async () => {
    const count = async (query: string) => (await get(`/v1/audit/events?limit=1000&${query}`)).body.items.length;
    const all = await count('');
    const late = encodeURIComponent('9999-12-31T20:00:00-05:00');
    expect(await count(`until=${late}`)).toBe(all);
    expect(await count(`since=${late}`)).toBe(0);
    // Issuances compare the same bounds the same way.
    const issued = (await get('/v1/audit/issuances?limit=1000')).body.items.length;
    expect((await get(`/v1/audit/issuances?until=${late}`)).body.items).toHaveLength(issued);
    expect((await get(`/v1/audit/issuances?since=${late}`)).body.items).toHaveLength(0);
  });
});

/** CONTRACT section 5's canonical form, written here from its words alone: keys sorted at every depth, no white space. */
const sortedJson = (value: unknown): string =>
  Array.isArray(value)
    ? `[${value.map(sortedJson).join(',')}]`
    : value !== null && typeof value === 'object'
      ? `{${Object.keys(value).sort().map((key) => `${JSON.stringify(key)}:${sortedJson((value as Record<string, unknown>)[key])}`).join(',')}}`
      : JSON.stringify(value);

describe('the chain', () => {
  it('is the contract\'s formula: seq from 1 without a gap, the first prev_hash 64 zeros, hash = hex(sha256(prev_hash + canonical))', async () => {
    const { createHash } = await import('node:crypto');
    const events = (await get('/v1/audit/events?limit=1000')).body.items as { seq: number; at: string; type: string; actor: unknown; request_id?: string; data: unknown; prev_hash: string; hash: string }[];
    expect(events.length).toBeGreaterThan(10);
    events.forEach((event, i) => {
      expect(event.seq).toBe(i + 1);
      expect(event.prev_hash).toBe(i === 0 ? '0'.repeat(64) : events[i - 1]?.hash);
      const canonical = sortedJson({ seq: event.seq, at: event.at, type: event.type, actor: event.actor, request_id: event.request_id ?? null, data: event.data });
      expect(event.hash, `seq ${event.seq}`).toBe(createHash('sha256').update(event.prev_hash + canonical).digest('hex'));
    });
  });

  it('is broken at a gap in seq, however well the hashes link across it', async () => {
    const { chainHash, GENESIS_HASH } = await import('../../src/shared/chain-hash.js');
    const { chainVerifier } = await import('../../src/audit/chain.js');
    // Links whose hashes chain, each over its own seq: 1, 2, then 4.
    const links: { seq: number; prevHash: string; hash: string; canonical: string }[] = [];
    for (const seq of [1, 2, 4]) {
      const prevHash = links.at(-1)?.hash ?? GENESIS_HASH;
      const canonical = `{"seq":${seq}}`;
      links.push({ seq, prevHash, canonical, hash: chainHash(prevHash, canonical) });
    }
    const verifier = chainVerifier();
    for (const link of links) if (!verifier.add(link)) break;
    expect(verifier.verdict()).toEqual({ ok: false, firstBadSeq: 3 });
  });

  it('verifies, and the store refuses to rewrite it', async () => {
    const verdict = (await get('/v1/audit/verify')).body;
    const [count] = await t.db.sql<{ n: number }>('SELECT count(*) AS n FROM audit_events');
    expect(verdict).toEqual({ ok: true, events: Number(count?.n), head: expect.stringMatching(/^[0-9a-f]{64}$/) });
    await expect(t.db.sql(`UPDATE audit_events SET type = 'x' WHERE seq = 3`)).rejects.toThrow(/append-only/);
    await expect(t.db.sql('DELETE FROM audit_events WHERE seq = 3')).rejects.toThrow(/append-only/);
    await expect(t.db.sql(ENGINE === 'postgres' ? 'TRUNCATE audit_events' : 'DELETE FROM audit_events')).rejects.toThrow(/append-only/);
  });
});
