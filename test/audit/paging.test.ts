import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';

/**
 * `GET /v1/audit/issuances` pages by issue time, and a token's time is taken before it is
 * committed: one recorded while an auditor pages can sort behind the cursor (the same millisecond
 * as the page's last row, a slower commit, a replica whose clock lags). Every token recorded
 * before the last page is read is listed, once.
 */

let t: TestBroker;
beforeEach(async () => {
  t = await startTestBroker(); // its clock stands still until moved
});
afterEach(async () => {
  await t.close();
});

type Page = { items: { request_id: string; task_id: string }[]; next_cursor: string | null };
const get = async (path: string) => t.http.get(path).set(bearer(await t.as.person('ivy', ['auditors'])));
const issue = async (task: string, scope = 'logs:read') => {
  const response = await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ task_id: task, scopes: [scope], audience: 'x' });
  expect(response.status, JSON.stringify(response.body)).toBe(201);
  return response.body.request_id as string;
};
const issueMany = async (prefix: string, count: number, scope?: string) => {
  const ids: string[] = [];
  for (let i = 0; i < count; i += 1) ids.push(await issue(`${prefix}-${i}`, scope));
  return ids;
};
/** Reads on from `cursor` to the end, `between` run after each page. */
async function readOn(query: string, cursor: string | null, between: () => Promise<unknown> = async () => {}) {
  const seen: string[] = [];
  while (cursor) {
    const page: Page = (await get(`/v1/audit/issuances?${query}&cursor=${cursor}`)).body;
    seen.push(...page.items.map((r) => r.request_id));
    cursor = page.next_cursor;
    await between();
  }
  return seen;
}

describe('issuance pages while tokens are recorded', () => {
  it('list a token of the last row\'s millisecond recorded after that page, once', async () => {
    const issued = await issueMany('before', 6);
    const first: Page = (await get('/v1/audit/issuances?limit=5')).body;
    expect(first.items).toHaveLength(5);
    issued.push(...(await issueMany('during', 10))); // the same millisecond, ids on both sides of the cursor's
    const seen = [...first.items.map((r) => r.request_id), ...(await readOn('limit=5', first.next_cursor))];
    expect([...seen].sort()).toEqual([...issued].sort());
    expect(new Set(seen).size).toBe(seen.length);
  });

  it('list tokens recorded behind the cursor by a clock that lags, over several pages, while more arrive', async () => {
    t.clock.advance(60_000);
    const issued = await issueMany('now', 3);
    const first: Page = (await get('/v1/audit/issuances?limit=2')).body;
    // Another replica's clock 30 s behind records seven; then one more after each page read.
    t.clock.advance(-30_000);
    issued.push(...(await issueMany('lagging', 7)));
    let arriving = 0;
    const seen = [
      ...first.items.map((r) => r.request_id),
      ...(await readOn('limit=2', first.next_cursor, async () => {
        if (arriving < 3) issued.push(await issue(`arriving-${arriving++}`));
      })),
    ];
    expect(seen).toHaveLength(issued.length);
    expect([...seen].sort()).toEqual([...issued].sort());
  });

  it('apply every filter to tokens recorded late, and the export lists what the pages do', async () => {
    const issued = await issueMany('logs', 3);
    const first: Page = (await get('/v1/audit/issuances?limit=2&scope=logs:read')).body;
    await issueMany('artifacts', 4, 'artifacts:read');
    issued.push(...(await issueMany('logs-late', 2)));
    const seen = [...first.items.map((r) => r.request_id), ...(await readOn('limit=2&scope=logs:read', first.next_cursor))];
    expect([...seen].sort()).toEqual([...issued].sort());

    const exported = (await get('/v1/audit/issuances?format=ndjson&scope=logs:read')).text.trim().split('\n').map((line) => JSON.parse(line).request_id);
    const paged = await readOn('limit=1&scope=logs:read', (await get('/v1/audit/issuances?limit=1&scope=logs:read')).body.next_cursor);
    expect(exported).toEqual([(await get('/v1/audit/issuances?limit=1&scope=logs:read')).body.items[0].request_id, ...paged]);
  });

  it('list in time order when nothing arrives late', async () => {
    for (let i = 0; i < 5; i += 1) {
      await issue(`in-order-${i}`);
      t.clock.advance(1_000);
    }
    const first: Page = (await get('/v1/audit/issuances?limit=2')).body;
    const seen = [...first.items.map((r) => r.task_id)];
    let cursor = first.next_cursor;
    while (cursor) {
      const page: Page = (await get(`/v1/audit/issuances?limit=2&cursor=${cursor}`)).body;
      seen.push(...page.items.map((r) => r.task_id));
      cursor = page.next_cursor;
    }
    expect(seen).toEqual(['in-order-0', 'in-order-1', 'in-order-2', 'in-order-3', 'in-order-4']);
  });
});
