import { afterEach, describe, expect, it } from 'vitest';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { eventsOf } from '../helpers/records.js';

/**
 * CONTRACT section 1, break-glass: its quota counts per person, whatever identity breaks glass, and
 * its review is by someone else than that person, under any identity, once.
 */

const J = 'registry down since 03:10, rolling back model 41';
const emergency = { task_id: 'incident-99', scopes: ['logs:read'], audience: 'logs', break_glass: true, justification: J };

let t: TestBroker;
afterEach(async () => {
  await t?.close();
});
const start = async (configure: (c: Record<string, any>) => void = () => {}) => {
  t = await startTestBroker({ configure });
};
const post = (token: string, body: Record<string, unknown>) => t.http.post('/v1/credentials').set(bearer(token)).send(body);
const review = (token: string, id: string, body: Record<string, unknown> = { outcome: 'justified', notes: 'ok checked' }) =>
  t.http.post(`/v1/credentials/${id}/review`).set(bearer(token)).send(body);

describe('the break-glass quota', () => {
  it('holds per person when three of their identities break glass at once', async () => {
    await start();
    const identities = await Promise.all([t.as.person('olga', ['on-call']), t.as.person('olga-2', ['on-call'], { preferred_username: 'Olga' }), t.as.pipeline({ actor: 'olga' })]);
    const answers = await Promise.all(Array.from({ length: 9 }, (_, i) => post(identities[i % 3]!, { ...emergency, task_id: `r${i}` })));
    expect(answers.filter((r) => r.status === 201)).toHaveLength(3);
    expect(answers.filter((r) => r.status === 429)).toHaveLength(6);
  });
});

describe('the review of a break-glass grant', () => {
  it('is refused to whoever broke glass under any identity: an alias, another spelling, the person who started the job', async () => {
    await start((c) => {
      c.people = [{ name: 'olga', aliases: [{ issuer: 'sso', username: 'olga' }, { issuer: 'sso', username: 'o.admin' }, { issuer: 'ci', username: 'olga-gh' }] }];
    });
    const g = await post(await t.as.person('olga', ['on-call']), emergency);
    expect(g.status).toBe(201);
    const alias = await review(await t.as.person('x1', ['approvers'], { preferred_username: 'o.admin' }), g.body.request_id);
    expect(alias.status).toBe(403);
    expect(alias.body.type).toMatch(/separation_of_duties$/);
    const cv = await review(await t.as.person('x2', ['approvers'], { preferred_username: 'OLGA\u3164' }), g.body.request_id);
    expect(cv.status).toBe(403);
    // a pipeline started by alice breaks glass; alice may not review
    const p = await post(await t.as.pipeline({ actor: 'alice' }), emergency);
    expect(p.status).toBe(201);
    const ini = await review(await t.as.person('alice', ['approvers']), p.body.request_id);
    expect(ini.status).toBe(403);
    expect(ini.body.type).toMatch(/separation_of_duties$/);
    // olga's ci alias started a job that broke glass
    const p2 = await post(await t.as.pipeline({ actor: 'olga-gh' }, 'repo:acme/z:x'), emergency);
    expect(p2.status).toBe(201);
    expect((await review(await t.as.person('olga', ['approvers']), p2.body.request_id)).status).toBe(403);
  });


  it('is recorded once when reviewers race: one 200, the rest 409, one event', async () => {
    await start();
    const g = await post(await t.as.person('olga', ['on-call']), emergency);
    const [a, b] = [await t.as.person('alice', ['approvers']), await t.as.person('bob', ['approvers'])];
    const rs = await Promise.all([review(a, g.body.request_id), review(b, g.body.request_id, { outcome: 'unjustified', notes: 'no' }), review(a, g.body.request_id)]);
    expect(rs.map((r) => r.status).sort()).toEqual([200, 409, 409]);
    expect((await eventsOf(t, g.body.request_id)).filter((e) => e.type === 'breakglass.reviewed')).toHaveLength(1);
  });

});
