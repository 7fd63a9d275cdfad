import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditService, EVENT_SCAN_BUDGET } from '../../src/audit/service.js';
import { encodeCursor } from '../../src/shared/cursor.js';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';

/**
 * One auditor must not be able to slow the broker for everyone: a filter that matches little
 * reads a bounded stretch of the chain per page, and verifications asked together walk it once.
 */

let t: TestBroker;
const EVENTS = 2 * EVENT_SCAN_BUDGET + 500;
beforeAll(async () => {
  t = await startTestBroker();
  for (let i = 0; i < EVENTS; i += 5_000) {
    await t.broker.store.append(Array.from({ length: Math.min(5_000, EVENTS - i) }, (_, k) => ({ type: 'request.created' as const, requestId: `seeded-${i + k}`, data: {} })));
  }
  // One match, near the end.
  await t.http.post('/v1/credentials').set(bearer(await t.as.pipeline())).send({ task_id: 'late', scopes: ['artifacts:read'], audience: 'registry.acme.internal' });
});
afterAll(async () => {
  await t.close();
});
const get = async (path: string) => t.http.get(path).set(bearer(await t.as.person('ivy', ['auditors'])));

describe('events filtered by type or time', () => {
  it('read at most a budget of the chain per page: short pages with a cursor, every match found once', async () => {
    const found: number[] = [];
    let pages = 0;
    for (let cursor: string | null = null; pages === 0 || cursor; pages++) {
      const page: { body: { items: { seq: number; type: string }[]; next_cursor: string | null } } = await get(`/v1/audit/events?type=token.issued&limit=10${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.body.items.length).toBeLessThanOrEqual(10);
      found.push(...page.body.items.map((event) => event.seq));
      cursor = page.body.next_cursor;
    }
    expect(found).toHaveLength(1);
    expect(pages).toBeGreaterThanOrEqual(3); // 20,500 seeded seqs, 10,000 a page
    const first = await get('/v1/audit/events?type=token.issued&limit=1');
    expect(first.body).toEqual({ items: [], next_cursor: expect.any(String) });
    // The export reads on to the end, and finds what the pages find.
    const exported = (await get('/v1/audit/events?type=token.issued&format=ndjson')).text.trim().split('\n').map((line) => JSON.parse(line).seq);
    expect(exported).toEqual(found);
  });

  it('read on as before when unfiltered or by request: full pages', async () => {
    expect((await get('/v1/audit/events?limit=1000')).body.items).toHaveLength(1000);
    expect((await get('/v1/audit/events?request_id=seeded-20000')).body).toMatchObject({ items: [expect.objectContaining({ request_id: 'seeded-20000' })], next_cursor: null });
  });
});

describe('a filtered listing while the chain grows', () => {
  it('never passes over an event: one appended while a page is read is listed, or the listing ends before it', async () => {
    // A page whose stretch of the chain reaches just past the head; two matches are appended as
    // soon as it has been read (another replica's commit, a slow round trip).
    const head = (await t.broker.store.events.head())?.seq as number;
    const from = head + 1 - EVENT_SCAN_BUDGET;
    const { events } = t.broker.store.audit;
    let grow = true;
    t.broker.store.audit.events = async (...args) => {
      const rows = await events(...args);
      if (grow) {
        grow = false;
        await t.broker.store.append([{ type: 'key.sealed', data: { n: 1 } }, { type: 'key.sealed', data: { n: 2 } }]);
      }
      return rows;
    };
    const listed: number[] = [];
    try {
      for (let cursor: string | null = encodeCursor([from]); cursor; ) {
        const page: { body: { items: { seq: number }[]; next_cursor: string | null } } = await get(`/v1/audit/events?type=key.sealed&limit=10&cursor=${cursor}`);
        listed.push(...page.body.items.map((event) => event.seq));
        cursor = page.body.next_cursor;
      }
    } finally {
      t.broker.store.audit.events = events;
    }
    const appended = [head + 1, head + 2];
    expect((await t.broker.store.audit.events({ type: 'key.sealed' }, from, 10)).map((event) => event.seq)).toEqual(appended);
    // Every match up to the last one listed is listed: here none, or both.
    expect([[], appended]).toContainEqual(listed);
  });
});

describe('verifications asked together', () => {
  it('walk the chain once between them, and each gets the verdict', async () => {
    const links = t.broker.store.events.links;
    let reads = 0;
    t.broker.store.events.links = (afterSeq, limit) => {
      reads += 1;
      return links(afterSeq, limit);
    };
    try {
      const alone = await get('/v1/audit/verify');
      expect(alone.body).toMatchObject({ ok: true, events: expect.any(Number) });
      const walk = reads;
      // Asked in one moment (over HTTP, when each arrives is the machine's to say): one walk between them.
      reads = 0;
      const audit = createAuditService({ store: t.broker.store, clock: t.clock, keyring: t.broker.keyring, issuer: t.config.issuer, settings: t.broker.settings.current });
      const auditor = { iss: t.issuers.sso.iss, sub: 'ivy', idp: 'sso', kind: 'person' as const, claims: {}, roles: new Set(['auditor' as const]) };
      const verdicts = await Promise.all(Array.from({ length: 5 }, () => audit.verify(auditor)));
      expect(verdicts).toEqual(Array(5).fill(alone.body));
      expect(reads).toBe(walk);
    } finally {
      t.broker.store.events.links = links;
    }
  });
});
