import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { AGENTS_ISS, bearer, startTestBroker, withAgents, withModelRelease, type TestBroker } from '../helpers/broker.js';
import { createTestIssuer } from '../helpers/issuer.js';

/**
 * `format: slack` against a receiver that answers as a Slack incoming webhook does: 200 for a
 * message of Slack's shape (`text`, Block Kit `blocks` within Slack's documented limits), 400
 * `invalid_blocks` or `no_text` for anything else, such as the plain JSON body.
 */

const plainText = (max: number) => z.strictObject({ type: z.literal('plain_text'), text: z.string().min(1).max(max), emoji: z.boolean().optional() });
const mrkdwn = (max: number) => z.strictObject({ type: z.literal('mrkdwn'), text: z.string().min(1).max(max), verbatim: z.boolean().optional() });
const textObject = (max: number) => z.union([plainText(max), mrkdwn(max)]);
const button = z.strictObject({
  type: z.literal('button'),
  text: plainText(75),
  action_id: z.string().max(255).optional(),
  url: z.url({ protocol: /^https?$/ }).max(3000).optional(),
  value: z.string().max(2000).optional(),
  style: z.enum(['primary', 'danger']).optional(),
});
const block = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('header'), text: plainText(150), block_id: z.string().optional() }),
  z
    .strictObject({ type: z.literal('section'), text: textObject(3000).optional(), fields: z.array(textObject(2000)).min(1).max(10).optional(), block_id: z.string().optional() })
    .refine((section) => section.text !== undefined || section.fields !== undefined, 'a section needs text or fields'),
  z.strictObject({ type: z.literal('context'), elements: z.array(textObject(3000)).min(1).max(10) }),
  z.strictObject({ type: z.literal('actions'), elements: z.array(button).min(1).max(25) }),
  z.strictObject({ type: z.literal('divider') }),
]);
const slackMessage = z.strictObject({ text: z.string().min(1).max(40_000), blocks: z.array(block).min(1).max(50) });
type SlackMessage = z.output<typeof slackMessage>;

async function startSlack() {
  const accepted: SlackMessage[] = [];
  const refused: unknown[] = [];
  const server = createServer((req, res) => {
    let text = '';
    req.on('data', (chunk: Buffer) => (text += chunk.toString()));
    req.on('end', () => {
      const parsed = slackMessage.safeParse((() => { try { return JSON.parse(text); } catch { return undefined; } })());
      if (!parsed.success) {
        refused.push(parsed.error.issues);
        return res.writeHead(400, { 'content-type': 'text/plain' }).end('invalid_blocks');
      }
      accepted.push(parsed.data);
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/services/T000/B000/XXXX`,
    accepted,
    refused,
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

let t: TestBroker | undefined;
let slack: Awaited<ReturnType<typeof startSlack>> | undefined;
afterEach(async () => {
  await t?.close();
  await slack?.close();
});

async function brokerPostingTo(format: 'slack' | 'json', more: (config: Record<string, any>) => void = () => {}) {
  slack = await startSlack();
  const url = slack.url;
  t = await startTestBroker({
    configure(config) {
      config.issuer = 'https://broker.acme.example';
      const issuers = (config.identity as { issuers: Record<string, unknown>[] }).issuers;
      issuers[0] = { ...issuers[0], bindClaims: ['run_id'] };
      issuers[1] = { ...issuers[1], audiences: ['jit-broker', 'jit-console'] };
      config.console = { issuer: 'sso', clientId: 'jit-console' };
      config.notify = { retries: 0, webhooks: [{ url, format, events: ['approval.requested', 'request.approved', 'breakglass.used'] }] };
      more(config);
    },
  });
  return t;
}

const headerOf = (message: SlackMessage) => (message.blocks[0] as { text: { text: string } }).text.text;
const fieldsOf = (message: SlackMessage) =>
  Object.fromEntries(
    message.blocks
      .flatMap((b) => ('fields' in b && b.fields ? b.fields : []))
      .map((field) => field.text.split('\n') as [string, string]),
  );
/** Each field's lines after its label. */
const fieldsOfAll = (message: SlackMessage) =>
  Object.fromEntries(
    message.blocks
      .flatMap((b) => ('fields' in b && b.fields ? b.fields : []))
      .map((field) => {
        const [label, ...lines] = field.text.split('\n');
        return [label as string, lines];
      }),
  );
const buttonOf = (message: SlackMessage) => message.blocks.flatMap((b) => (b.type === 'actions' ? b.elements : []))[0];

describe('format: slack', () => {
  it('posts a Slack message: who asks for what, for which job, why, how long, and a button to the console', async () => {
    const t = await brokerPostingTo('slack');
    const ml = await t.as.ml({ run_id: 4242, actor: 'bob' });
    const pending = await t.http
      .post('/v1/credentials')
      .set(bearer(ml))
      .send({ task_id: 'deploy-7', scopes: ['model:deploy'], audience: 'registry.acme.internal', justification: 'release 7, see change 123' });
    const approver = await t.as.person('alice', ['approvers', 'ml-release']);
    await t.http.post(`/v1/credentials/${pending.body.request_id}/approvals`).set(bearer(approver)).send({ decision: 'approve', reason: 'ok', digest: pending.body.digest });
    const collected = await t.http.post(`/v1/credentials/${pending.body.request_id}/token`).set(bearer(ml));
    await t.broker.notifier.idle();

    expect(slack!.refused).toEqual([]);
    const [requested, approved] = slack!.accepted;
    expect(requested?.text).toBe('Approval requested: repo:acme/ml:ref:refs/heads/main asks for model:deploy for registry.acme.internal (job: started by bob, {"run_id":4242}), 10 min');
    expect(headerOf(requested as SlackMessage)).toBe('Approval requested: model:deploy for registry.acme.internal');
    expect(fieldsOf(requested as SlackMessage)).toMatchObject({
      Requester: 'repo:acme/ml:ref:refs/heads/main (https://ci.test)',
      Scopes: 'model:deploy',
      Audience: 'registry.acme.internal',
      Task: 'deploy-7',
      Job: 'started by bob, {"run_id":4242}',
      Lifetime: '10 min',
      'Approvals needed': '1',
      'Decide by': pending.body.expires_at,
    });
    expect(JSON.stringify(requested)).toContain('Why: release 7, see change 123');
    expect(JSON.stringify(requested)).toContain(pending.body.digest);
    expect(buttonOf(requested as SlackMessage)).toEqual({
      type: 'button',
      action_id: 'open_console',
      text: { type: 'plain_text', text: 'Review and decide', emoji: false },
      url: `https://broker.acme.example/console/requests/${pending.body.request_id}`,
      style: 'primary',
    });
    expect(approved?.text).toMatch(/^Request approved: /);
    expect(JSON.stringify(slack!.accepted)).not.toContain((collected.body.access_token as string).split('.')[2]);
    expect(JSON.stringify(slack!.accepted)).not.toContain('eyJ');
  });

  it('keeps a hostile justification from mentioning, linking or reordering: plain text, escaped, invisible characters shown', async () => {
    const t = await brokerPostingTo('slack');
    const justification = `<!channel> see <https://evil.example|the change> & ${'x'.repeat(1900)}`;
    const used = await t.http
      .post('/v1/credentials')
      .set(bearer(await t.as.ml({ run_id: 'r\u202e1 <!channel> <https://evil.example|x>' })))
      .send({ task_id: 'deploy-8', scopes: ['model:deploy'], audience: 'registry.acme.internal', break_glass: true, justification });
    expect(used.status).toBe(201);
    await t.broker.notifier.idle();

    expect(slack!.refused).toEqual([]);
    const [message] = slack!.accepted;
    expect(message?.text).not.toMatch(/<[!@#]|<https?:/);
    expect(message?.text).toContain('{"run_id":"r\\u{202e}1 &lt;!channel&gt; &lt;https://evil.example|x&gt;"}');
    const mrkdwnTexts = message!.blocks.flatMap((b) => ('text' in b && b.text && b.text.type === 'mrkdwn' ? [b.text] : []));
    expect(mrkdwnTexts).toEqual([]); // everything from the request is plain_text
    const why = message!.blocks.find((b) => b.type === 'section' && 'text' in b && b.text?.text.startsWith('Why: ')) as { text: { text: string } };
    expect(why.text.text.startsWith('Why: <!channel> see <https://evil.example|the change> & xxx')).toBe(true);
    expect(JSON.stringify(message)).not.toContain('\u202e');
    expect(headerOf(message as SlackMessage)).toBe('BREAK-GLASS used: model:deploy for registry.acme.internal');
    expect(buttonOf(message as SlackMessage)?.text.text).toBe('Review the break-glass grant');
  });

  it('names who acts for the requester and the objects it acts on: both are part of what an approver approves', async () => {
    const agents = await createTestIssuer(AGENTS_ISS);
    const t = await brokerPostingTo('slack', (config) => {
      withAgents(config, agents);
      withModelRelease(config);
    });
    const asked = await t.http.post('/oauth2/token').type('form').send({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: await t.as.person('erin', ['ml-eng']),
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      actor_token: await agents.token('agent:release-1', { owner: 'olivia' }, { now: t.clock() }),
      actor_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      scope: 'model:deploy',
      audience: 'registry.acme.internal',
      task_id: 'agent deploy',
      authorization_details: JSON.stringify([{ type: 'model', identifier: 'fraud-v3', actions: ['deploy', 'rollback'] }, { type: 'model', identifier: 'churn "v1"' }]),
    });
    expect(asked.body.error).toBe('authorization_pending');
    await t.broker.notifier.idle();

    expect(slack!.refused).toEqual([]);
    const [message] = slack!.accepted;
    const fields = fieldsOfAll(message as SlackMessage);
    // An agent acts: the message says so, and which models, each value quoted so where one ends shows.
    expect(fields.Requester).toEqual([`erin (${t.issuers.sso.iss})`]);
    expect(fields['Acting for them']).toEqual([`"agent:release-1" (${AGENTS_ISS})`]);
    expect(fields.Objects).toEqual(['"model" "fraud-v3"; actions "deploy", "rollback"', '"model" "churn \\"v1\\""']);
    expect(message?.text).toBe('Approval requested: agent:release-1 for erin asks for model:deploy for registry.acme.internal, 5 min');
  });

  it('shows every character that does not show as an escape, as the CLI does: fillers, variation selectors, odd spaces', async () => {
    const t = await brokerPostingTo('slack');
    // Each of these draws as nothing or as a plain space in Slack: `deploy-7ㅤ` would read as `deploy-7`.
    const hidden = '\u3164\u2800\u115F\uFE0F\u034F\u00A0\u2028\u200B';
    const pending = await t.http
      .post('/v1/credentials')
      .set(bearer(await t.as.ml({ run_id: `r${hidden}` })))
      .send({ task_id: `deploy-7${hidden}`, scopes: ['model:deploy'], audience: 'registry.acme.internal', justification: `release 7${hidden}, see change 123` });
    expect(pending.status).toBe(202);
    await t.broker.notifier.idle();

    expect(slack!.refused).toEqual([]);
    const [message] = slack!.accepted;
    const escaped = '\\u{3164}\\u{2800}\\u{115f}\\u{fe0f}\\u{34f}\\u{a0}\\u{2028}\\u{200b}';
    expect(fieldsOf(message as SlackMessage).Task).toBe(`deploy-7${escaped}`);
    expect(message?.text).toContain(`{"run_id":"r${escaped}"}`);
    const why = message!.blocks.find((b) => b.type === 'section' && 'text' in b && b.text?.text.startsWith('Why: ')) as { text: { text: string } };
    expect(why.text.text).toBe(`Why: release 7${escaped}, see change 123`);
    for (const c of hidden) expect(JSON.stringify(message)).not.toContain(c);
  });

  it('cuts the header at Slack\'s 150 characters, marked as cut', async () => {
    const audience = `registry.acme.internal/${'a'.repeat(200)}`;
    const t = await brokerPostingTo('slack', (config) => {
      config.policies.find((p: { id: string }) => p.id === 'ml-main').audiences.push(audience);
    });
    const pending = await t.http.post('/v1/credentials').set(bearer(await t.as.ml({ run_id: 1 }))).send({ task_id: 'deploy-10', scopes: ['model:deploy'], audience });
    expect(pending.status).toBe(202);
    await t.broker.notifier.idle();

    expect(slack!.refused).toEqual([]);
    const header = headerOf(slack!.accepted[0] as SlackMessage);
    expect(header).toBe(`${`Approval requested: model:deploy for ${audience}`.slice(0, 149)}…`);
    expect(header).toHaveLength(150);
  });

  it('cuts the notification text at 3,000 characters marked as cut, and never halfway through an escape', async () => {
    const t = await brokerPostingTo('slack');
    // Who asks and the job, each as long as the broker takes it (1 KiB): the text would run past 3,000.
    const long = '&'.repeat(1_000);
    const ml = await t.issuers.ci.token(`repo:acme/ml:${long}`, { repository: 'acme/ml', ref: 'refs/heads/main', actor: long, run_id: long }, { now: t.clock() });
    const pending = await t.http.post('/v1/credentials').set(bearer(ml)).send({ task_id: 'deploy-11', scopes: ['model:deploy'], audience: 'registry.acme.internal' });
    expect(pending.status).toBe(202);
    await t.broker.notifier.idle();

    expect(slack!.refused).toEqual([]);
    const text = slack!.accepted[0]?.text as string;
    // The reader of a notification cut short is told so: what followed (the audience, the lifetime) is not there.
    expect(text.endsWith('…')).toBe(true);
    expect(text.replace(/&amp;/g, '&').length).toBeLessThanOrEqual(3_000);
    expect(text.replace(/&amp;/g, '')).not.toContain('&');
  });

  it('is what a Slack webhook needs: the plain JSON body is refused by the same receiver', async () => {
    const t = await brokerPostingTo('json');
    await t.http.post('/v1/credentials').set(bearer(await t.as.ml({ run_id: 1 }))).send({ task_id: 'deploy-9', scopes: ['model:deploy'], audience: 'registry.acme.internal' });
    await t.broker.notifier.idle();
    expect(slack!.accepted).toEqual([]);
    expect(slack!.refused).toHaveLength(1);
  });
});
