import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { liveClock, listen, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { jit, type JitOptions } from '../helpers/jit-process.js';

/**
 * The `jit` binary as a pipeline and a person run it: a child process against the broker on a
 * loopback port, its stdout, stderr and exit code asserted.
 */

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

const as = (identity: string, options: JitOptions = {}): JitOptions => ({
  ...options,
  env: { BROKER_URL: server.url, BROKER_IDENTITY_TOKEN: identity, JIT_POLL_INTERVAL: '100ms', ...options.env },
});
const approver = (sub = 'alice') => t.as.person(sub, ['approvers', 'ml-release']);
const auditor = () => t.as.person('ivy', ['auditors']);
const deploy = ['request', '--scope', 'model:deploy', '--audience', 'registry.acme.internal', '--task', 'deploy-7'];
const JWT = /^[\w-]+\.[\w-]+\.[\w-]+$/;

/** Starts `jit request` for a high-risk scope and answers its request id once the CLI has printed it. */
/** Starts `jit request --wait`; `id` resolves once it has polled and said it waits, so a decision comes after that line. */
function requestAndWait(identity: string, extra: string[] = []) {
  let announce: (id: string) => void;
  const id = new Promise<string>((resolve) => (announce = resolve));
  const result = jit([...deploy, '--wait', '30s', ...extra], as(identity, {
    onStderr: (stderr) => {
      const found = /waiting for approval of (\S+):/.exec(stderr);
      if (found) announce(found[1] as string);
    },
  }));
  return { id, result };
}

describe('jit request', () => {
  it('prints the credential alone on stdout, and the broker\'s answer with --json', async () => {
    const identity = await t.as.ml();
    const plain = await jit(['request', '--scope', 'artifacts:read', '--audience', 'registry.acme.internal', '--task', 'build-1'], as(identity));
    expect(plain).toMatchObject({ code: 0, stderr: '' });
    expect(plain.stdout).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+\n$/);
    expect(decodeJwt(plain.stdout)).toMatchObject({ scope: 'artifacts:read', task_id: 'build-1' });

    const json = await jit(['request', '--scope', 'artifacts:read', '--audience', 'registry.acme.internal', '--task', 'build-2', '--json'], as(identity));
    expect(json).toMatchObject({ code: 0, stderr: '' });
    const body = JSON.parse(json.stdout) as Record<string, unknown>;
    expect(body).toMatchObject({ status: 'issued', token_type: 'Bearer', scopes: ['artifacts:read'], audience: 'registry.acme.internal', break_glass: false });
    expect(decodeJwt(body.access_token as string).request_id).toBe(body.request_id);
  });

  it('waits for approval with progress on stderr, then prints the token', async () => {
    const { id, result } = requestAndWait(await t.as.ml());
    const requestId = await id;
    const decided = await jit(['approve', requestId, '--reason', 'release 7 reviewed', '--yes'], as(await approver()));
    expect(decided).toMatchObject({ code: 0, stdout: '' });
    expect(decided.stderr).toContain(`request       ${requestId} (pending_approval)`);
    expect(decided.stderr).toMatch(/digest        [0-9a-f]{64}/);
    expect(decided.stderr).toContain('recorded: approve; the request is now approved');

    const requested = await result;
    expect(requested.code).toBe(0);
    expect(requested.stderr).toContain(`request ${requestId} needs 1 approval(s); digest`);
    expect(requested.stderr).toContain(`waiting for approval of ${requestId}: 0/1 approvals`);
    expect(requested.stderr).toContain(`request ${requestId} approved; collecting the token`);
    expect(decodeJwt(requested.stdout)).toMatchObject({ request_id: requestId, approvers: [expect.objectContaining({ sub: 'alice' })] });
  });

  it('exits 3 when an approver denies the request, saying who and why; --json prints the denied request', async () => {
    const { id, result } = requestAndWait(await t.as.ml(), ['--json']);
    const requestId = await id;
    expect((await jit(['deny', requestId, '--reason', 'not today', '--yes'], as(await approver('carol')))).code).toBe(0);
    const requested = await result;
    expect(requested.code).toBe(3);
    expect(requested.stderr).toContain(`request ${requestId} was denied by carol: not today; no token`);
    expect(JSON.parse(requested.stdout)).toMatchObject({ request_id: requestId, status: 'denied', approvals: [{ sub: 'carol', decision: 'deny' }] });
  });

  it('ends a wait at its deadline: the last pause is cut to the time left, not a whole poll interval', async () => {
    // The wait runs on the test's clock: each pause moves it by what the CLI asked for, at once.
    let now = Date.now();
    const pauses: number[] = [];
    const clock = { now: () => now, sleep: async (ms: number) => void (pauses.push(ms), (now += ms)) };
    const result = await jit([...deploy, '--wait', '5s', '--json'], as(await t.as.ml(), { env: { JIT_POLL_INTERVAL: '2s' }, clock }));
    expect(result.code).toBe(75);
    expect(pauses).toEqual([2000, 2000, 1000]);
    expect(JSON.parse(result.stdout)).toMatchObject({ status: 'pending_approval' });
    expect(result.stderr).toMatch(/is still pending approval; collect the token later with: jit collect \S+\n$/);
  });

  it('with --wait 0 exits 75 and prints the pending request as JSON; collect picks the token up once', async () => {
    const identity = await t.as.ml();
    const pending = await jit([...deploy, '--wait', '0', '--json'], as(identity));
    expect(pending.code).toBe(75);
    const body = JSON.parse(pending.stdout) as { request_id: string; digest: string };
    expect(body).toMatchObject({ status: 'pending_approval', approvals_required: 1, approvals: [], digest: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(pending.stderr).toContain(`collect the token later with: jit collect ${body.request_id}`);

    const plain = await jit([...deploy, '--wait', '0'], as(identity));
    expect(plain).toMatchObject({ code: 75, stdout: '' });

    const notYet = await jit(['collect', body.request_id, '--wait', '0', '--json'], as(identity));
    expect(notYet.code).toBe(75);
    expect(JSON.parse(notYet.stdout)).toMatchObject({ request_id: body.request_id, status: 'pending_approval' });

    await jit(['approve', body.request_id, '--reason', 'ok', '--digest', body.digest, '--yes'], as(await approver()));
    const collected = await jit(['collect', body.request_id, '--json'], as(identity));
    expect(collected.code).toBe(0);
    expect(JSON.parse(collected.stdout)).toMatchObject({ request_id: body.request_id, status: 'issued', access_token: expect.stringMatching(JWT) });
    const again = await jit(['collect', body.request_id], as(identity));
    expect(again).toMatchObject({ code: 1, stdout: '' });
    expect(again.stderr).toContain('was already collected: its token is given once');
  });

  it('refuses a decision bound to a digest the approver did not review, before sending it', async () => {
    const identity = await t.as.ml();
    const { request_id: id } = JSON.parse((await jit([...deploy, '--wait', '0', '--json'], as(identity))).stdout) as { request_id: string };
    const stale = await jit(['approve', id, '--reason', 'ok', '--digest', 'f'.repeat(64), '--yes'], as(await approver()));
    expect(stale.code).toBe(1);
    expect(stale.stderr).toContain('no longer matches the digest you reviewed; nothing was decided');
    expect(JSON.parse((await jit(['show', id], as(identity))).stdout)).toMatchObject({ status: 'pending_approval' });
  });
});

describe('break-glass, review, complete and revoke', () => {
  it('runs the whole life of a grant, ending it by the token itself', async () => {
    const olga = await t.as.person('olga', ['on-call']);
    const glass = await jit(
      ['request', '--scope', 'model:deploy', '--audience', 'registry.acme.internal', '--task', 'incident-1', '--break-glass', '--justification', 'registry down, rolling back model 41', '--json'],
      as(olga),
    );
    expect(glass.code).toBe(0);
    const { request_id: id, access_token } = JSON.parse(glass.stdout) as { request_id: string; access_token: string };
    expect(decodeJwt(access_token).break_glass).toBe(true);

    const own = await jit(['review', id, '--outcome', 'justified', '--notes', 'me'], as(olga));
    expect(own.code).toBe(3);
    expect(own.stderr).toMatch(/^jit review: separation_of_duties: /);
    const reviewed = await jit(['review', id, '--outcome', 'justified', '--notes', 'incident 1 confirmed', '--json'], as(await approver()));
    expect(reviewed.code).toBe(0);
    expect(JSON.parse(reviewed.stdout)).toMatchObject({ request_id: id, review: { status: 'done', outcome: 'justified' } });

    // The token on stdin: never in the process list, never echoed.
    const completed = await jit(['complete', '-'], as(olga, { stdin: `${access_token}\n` }));
    expect(completed).toMatchObject({ code: 0, stdout: '', stderr: `request ${id} is now revoked\n` });
    expect(JSON.parse((await jit(['show', id], as(olga))).stdout)).toMatchObject({ status: 'revoked', revoke_reason: 'task_completed' });
  });

  it('revokes by request id or by token, with --json printing the request', async () => {
    const identity = await t.as.ml();
    const issue = async () =>
      JSON.parse((await jit(['request', '--scope', 'artifacts:read', '--audience', 'registry.acme.internal', '--task', 'x', '--json'], as(identity))).stdout) as {
        request_id: string;
        access_token: string;
      };
    const first = await issue();
    const byId = await jit(['revoke', first.request_id, '--reason', 'leaked', '--json'], as(identity));
    expect(byId).toMatchObject({ code: 0, stderr: '' });
    expect(JSON.parse(byId.stdout)).toMatchObject({ request_id: first.request_id, status: 'revoked', revoke_reason: 'leaked' });

    const second = await issue();
    const byToken = await jit(['revoke', second.access_token, '--reason', 'leaked'], as(identity));
    expect(byToken).toMatchObject({ code: 0, stdout: '', stderr: `request ${second.request_id} is now revoked\n` });

    // show takes the credential too; commands that need the id refuse a token rather than send it.
    expect(JSON.parse((await jit(['show', second.access_token], as(identity))).stdout)).toMatchObject({ request_id: second.request_id, status: 'revoked' });
    const needId = [['collect'], ['approve', '--reason', 'x', '--yes'], ['review', '--outcome', 'justified', '--notes', 'x']];
    const refusals = await Promise.all(needId.map(([command, ...rest]) => jit([command as string, second.access_token, ...rest], as(identity))));
    refusals.forEach((refused, i) => {
      expect(refused, needId[i]?.[0]).toMatchObject({ code: 2, stdout: '' });
      expect(refused.stderr, needId[i]?.[0]).toContain('that is a token, not a request id');
      expect(refused.stderr, needId[i]?.[0]).not.toContain(second.access_token);
    });
    // A JWT that is not the broker's (here the caller's own identity) names no request: refused, not echoed.
    const wrong = await jit(['complete', identity], as(identity));
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toContain('neither a request id nor a broker token');
    expect(wrong.stderr).not.toContain(identity);
  });
});

describe('what the CLI prints from the broker', () => {
  it('shows control characters in a request as escapes, so it cannot redraw the approver\'s terminal', async () => {
    const hostile = await t.as.ml({ sub: 'repo:acme/ml:ref:refs/heads/main\u001b[1A\u001b[2Kjustification checked by security' });
    const pending = await jit([...deploy, '--wait', '0'], as(hostile));
    expect(pending.code).toBe(75);
    const listed = await jit(['approvals'], as(await approver('mallory-watcher')));
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain('requester     "repo:acme/ml:ref:refs/heads/main\\u{1b}[1A\\u{1b}[2Kjustification checked by security"  [https://ci.test]');
    expect(listed.stdout).not.toMatch(/\u001b/);
  });

  it('shows every character that does not show as an escape, as the console draws it as a marker: fillers, variation selectors, separators', async () => {
    // Each would read as nothing, or as a blank, in the task or the justification an approver decides on.
    const hidden = ['\u3164', '\u115F', '\u2800', '\u034F', '\uFE0F', '\u2028', '\u00A0', '\u{E0100}'];
    const justification = `ship it ${hidden.map((c, i) => `${c}x${i}`).join('')}`;
    const pending = await jit([...deploy, '--task', 'deploy-\u3164', '--justification', justification, '--wait', '0', '--json'], as(await t.as.ml()));
    expect(pending.code).toBe(75);
    const { request_id: id } = JSON.parse(pending.stdout) as { request_id: string };
    const listed = await jit(['approvals'], as(await approver('hidden-watcher')));
    const view = listed.stdout.split('\n\n').find((text) => text.startsWith(`request       ${id} `)) as string;
    expect(view).toContain('task          "deploy-\\u{3164}"\n');
    expect(view).toContain(`justification "ship it ${hidden.map((c, i) => `\\u{${(c.codePointAt(0) as number).toString(16)}}x${i}`).join('')}"\n`);
    expect(listed.stdout).not.toMatch(/[\u3164\u115F\u2800\u034F\uFE0F\u2028\u00A0\u{E0100}]/u);
    // As JSON, the same characters are JSON escapes: the value parses back to what was asked.
    const shown = await jit(['show', id], as(await approver('hidden-watcher')));
    expect(shown.stdout).not.toMatch(/[\u3164\u115F\u2800\u034F\uFE0F\u2028\u00A0\u{E0100}]/u);
    expect(JSON.parse(shown.stdout)).toMatchObject({ task_id: 'deploy-\u3164', justification });
  });
});

describe('jit audit', () => {
  it('prints issuances as a table, JSON objects, CSV or NDJSON, and events since a while ago', async () => {
    const identity = await t.as.ml();
    await jit(['request', '--scope', 'artifacts:read', '--audience', 'registry.acme.internal', '--task', 'audited-1'], as(identity));
    const ivy = await auditor();

    const table = await jit(['audit', 'issuances', '--all'], as(ivy));
    expect(table.code).toBe(0);
    expect(table.stdout.split('\n')[0]).toMatch(/^ISSUED\s+STATUS\s+SUBJECT\s+SCOPES\s+AUDIENCE\s+TASK\s+APPROVERS$/);
    expect(table.stdout).toMatch(/repo:acme\/ml:ref:refs\/heads\/main\s+artifacts:read\s+registry\.acme\.internal\s+audited-1/);

    const json = await jit(['audit', 'issuances', '--all', '--json', '--since', '1h'], as(ivy));
    expect(json.code).toBe(0);
    const rows = JSON.parse(json.stdout) as Record<string, unknown>[];
    expect(rows).toContainEqual(
      expect.objectContaining({ task_id: 'audited-1', scopes: ['artifacts:read'], requester: expect.objectContaining({ sub: 'repo:acme/ml:ref:refs/heads/main' }), jti: expect.any(String) }),
    );
    // --until 1h: an hour ago, before anything here happened.
    expect(JSON.parse((await jit(['audit', 'issuances', '--json', '--until', '1h'], as(ivy))).stdout)).toEqual([]);

    const csv = await jit(['audit', 'issuances', '--format', 'csv'], as(ivy));
    expect(csv.stdout.split('\r\n')[0]).toMatch(/^jti,request_id,/);
    const events = await jit(['audit', 'events', '--format', 'ndjson', '--type', 'token.issued', '--since', '10m'], as(ivy));
    expect(events.stdout.trim().split('\n').map((line) => (JSON.parse(line) as { type: string }).type)).toContain('token.issued');
    const eventsJson = JSON.parse((await jit(['audit', 'events', '--json', '--type', 'token.issued', '--limit', '1'], as(ivy))).stdout) as Record<string, unknown>[];
    expect(eventsJson).toEqual([expect.objectContaining({ seq: expect.any(Number), type: 'token.issued', hash: expect.any(String) })]);

    expect((await jit(['audit', 'verify'], as(ivy))).stdout).toMatch(/^ok: \d+ events/);
    const both = await jit(['audit', 'issuances', '--json', '--format', 'csv'], as(ivy));
    expect(both.code).toBe(2);
    const refused = await jit(['audit', 'issuances'], as(identity));
    expect(refused).toMatchObject({ code: 3, stdout: '' });
    expect(refused.stderr).toMatch(/^jit audit: policy_denied: /);
  });

  it('decodes a token for reading', async () => {
    const result = await jit(['decode', '-'], { stdin: await t.as.ml() });
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ header: { alg: 'ES256', typ: 'JWT' }, claims: { iss: 'https://ci.test' } });
  });
});
