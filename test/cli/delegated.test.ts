import { decodeJwt } from 'jose';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AGENTS_ISS, liveClock, listen, startTestBroker, withAgents, type TestBroker } from '../helpers/broker.js';
import { createTestIssuer, type TestIssuer } from '../helpers/issuer.js';
import { jit } from '../helpers/jit-process.js';
import { tempDir } from '../helpers/temp.js';

/**
 * A request an agent makes for its person with `jit request --actor-token` that waits for
 * approval: the CLI says how to collect it, and `jit collect --actor-token` does, at /oauth2/token
 * (the only place a delegated request is collected).
 */

let t: TestBroker;
let server: Awaited<ReturnType<typeof listen>>;
let agents: TestIssuer;
beforeAll(async () => {
  agents = await createTestIssuer(AGENTS_ISS);
  t = await startTestBroker({ clock: liveClock(), configure: (config) => withAgents(config, agents) });
  server = await listen(t);
});
afterAll(async () => {
  await server?.close();
  await t?.close();
});

/** carol at the SSO, and the file holding the token of an agent she launched. */
async function carolAndHerAgent(sub: string) {
  const actorFile = join(tempDir('jit-actor-'), 'agent.jwt');
  writeFileSync(actorFile, await agents.token(`agent:release-${sub}`, { owner: sub }, { now: t.clock() }));
  return { env: { BROKER_URL: server.url, BROKER_IDENTITY_TOKEN: await t.as.person(sub, ['ml-eng']) }, actorFile };
}
const ask = (actorFile: string, task: string) => ['request', '--scope', 'model:deploy', '--audience', 'registry.acme.internal', '--task', task, '--actor-token', actorFile, '--wait', '0'];
const approve = async (id: string) =>
  jit(['approve', id, '--reason', 'ok', '--yes'], { env: { BROKER_URL: server.url, BROKER_IDENTITY_TOKEN: await t.as.person('alice', ['approvers', 'ml-release']) } });

describe('jit and a delegated request that waits for approval', () => {
  it('says to collect it with the agent\'s token, and jit collect --actor-token does; without it, the broker says where', async () => {
    const { env, actorFile } = await carolAndHerAgent('carol');
    const asked = await jit(ask(actorFile, 'rel-1'), { env });
    expect(asked.code, asked.stderr).toBe(75);
    const id = /request (\S+) needs approval/.exec(asked.stderr)?.[1] as string;
    expect(asked.stderr).toContain(`jit collect ${id} --actor-token ${actorFile}`);
    expect((await approve(id)).code).toBe(0);

    const plain = await jit(['collect', id, '--wait', '0'], { env });
    expect(plain.code).toBe(1);
    expect(plain.stderr).toContain('collected at /oauth2/token');
    const collected = await jit(['collect', id, '--wait', '0', '--actor-token', actorFile], { env });
    expect(collected.stderr).toBe(`request ${id} approved; collecting the token\n`);
    expect(collected.code).toBe(0);
    expect(decodeJwt(collected.stdout.trim())).toMatchObject({ sub: 'carol', act: { iss: AGENTS_ISS, sub: 'agent:release-carol' }, scope: 'model:deploy' });
  });

  it('prints the pending request with --json', async () => {
    const { env, actorFile } = await carolAndHerAgent('dora');
    const asked = await jit([...ask(actorFile, 'rel-2'), '--json'], { env });
    expect(asked.code).toBe(75);
    expect(JSON.parse(asked.stdout)).toMatchObject({ error: 'authorization_pending', request_id: expect.any(String) });
  });
});

describe('exit codes of arguments the broker refuses, at /v1 and at /oauth2/token alike', () => {
  it('2 when the broker names what it refuses among what the command was given, as the README\'s table says, whichever endpoint answers', async () => {
    const { env, actorFile } = await carolAndHerAgent('erin');
    const lowRisk = (task: string, scope = 'logs:read') => ['request', '--scope', scope, '--audience', 'logs', '--task', task];
    // A task id past its 256 characters; a scope that is no scope name (`invalid_scope` at /oauth2, naming the field).
    const runs = [];
    for (const args of [lowRisk('t'.repeat(300)), lowRisk('bad-scope', 'logs:read\u0000')]) {
      for (const [endpoint, extra] of [['/v1', []], ['/oauth2/token', ['--actor-token', actorFile]]] as const) {
        const { code, stdout, stderr } = await jit([...args, ...extra], { env });
        runs.push({ endpoint, code, stdout, refusal: stderr.split(':')[1]?.trim() });
      }
    }
    expect(runs).toEqual([
      { endpoint: '/v1', code: 2, stdout: '', refusal: 'invalid_request' },
      { endpoint: '/oauth2/token', code: 2, stdout: '', refusal: 'invalid_request' },
      { endpoint: '/v1', code: 2, stdout: '', refusal: 'invalid_request' },
      { endpoint: '/oauth2/token', code: 2, stdout: '', refusal: 'invalid_scope' },
    ]);
  });
});
