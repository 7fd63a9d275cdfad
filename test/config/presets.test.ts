import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { loadConfig } from '../../src/config/index.js';
import { bearer, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { runCli } from '../helpers/cli.js';
import { createTestIssuer, type TestIssuer } from '../helpers/issuer.js';

/**
 * The ready-to-copy presets under config/examples: each loads as it is shipped, and a broker
 * running it exchanges a token shaped like its system's for a credential. Only the key sources
 * change (the test's keys stand in for GitHub's, GitLab's, the cluster's, SPIRE's and the SSO's).
 */

const EXAMPLES = 'config/examples';
let t: TestBroker | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

type Raw = { identity: { issuers: Record<string, unknown>[] } } & Record<string, unknown>;
const preset = (name: string) => YAML.parse(readFileSync(join(EXAMPLES, name), 'utf8')) as Raw;

/** Runs a preset with a test key pair standing in for each issuer's keys; returns the signers by issuer name. */
async function run(name: string): Promise<Record<string, TestIssuer>> {
  const raw = preset(name);
  const signers: Record<string, TestIssuer> = {};
  for (const issuer of raw.identity.issuers) {
    const alg = (issuer.algorithms as string[])[0] as string;
    const signer = await createTestIssuer((issuer.issuer as string | undefined) ?? 'unused', alg);
    signers[issuer.name as string] = signer;
    delete issuer.jwksUri;
    delete issuer.jwksFile;
    issuer.jwks = signer.jwks;
  }
  t = await startTestBroker({ config: raw });
  return signers;
}

const exchange = (identity: string, fields: Record<string, string>) =>
  t!.http
    .post('/oauth2/token')
    .type('form')
    .send({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: identity,
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      ...fields,
    });

const PRESETS = ['github-actions.yaml', 'gitlab.yaml', 'kubernetes.yaml', 'ml-release.yaml', 'spiffe.yaml', 'sso.yaml'];

describe('the presets under config/examples', () => {
  it.each(PRESETS)('%s loads as shipped', (name) => {
    expect(() => loadConfig(join(EXAMPLES, name), {})).not.toThrow();
  });

  it.each(PRESETS)('%s ships its cases beside it, and answers every one as it says (jit policy test)', async (name) => {
    const { config } = loadConfig(join(EXAMPLES, name), {});
    const cases = name.replace(/\.yaml$/, '.cases.yaml');
    expect(config.policyTests).toBe(cases);
    const result = await runCli(['policy', 'test', join(EXAMPLES, cases), '--config', join(EXAMPLES, name)]);
    expect(result.stderr).toBe('');
    expect(result.stdout).not.toContain('FAIL');
    expect(result.stdout).toMatch(/^\d+ cases: (\d+) passed, 0 failed\n$/m);
    expect(result.code).toBe(0);
  });

  it('github-actions.yaml: a run exchanges its Actions token; a deploy waits for an approver who did not start the run', async () => {
    const { github, okta } = await run('github-actions.yaml');
    const actions = (actor: string) =>
      github!.token('repo:acme/app:ref:refs/heads/main', {
        aud: 'jit-broker',
        ref: 'refs/heads/main',
        sha: 'a1b2c3d4',
        repository: 'acme/app',
        repository_owner: 'acme',
        actor,
        actor_id: '4242',
        workflow: 'release',
        job_workflow_ref: 'acme/workflows/.github/workflows/deploy.yml@refs/heads/main',
        event_name: 'push',
        run_id: '9876543210',
        run_number: '77',
        run_attempt: '1',
        runner_environment: 'github-hosted',
      });
    const read = await exchange(await actions('bob-gh'), { scope: 'artifacts:read', audience: 'registry.acme.internal', task_id: 'build' });
    expect(read.status).toBe(200);
    expect(read.body.access_token).toBeDefined();

    const deploy = await exchange(await actions('bob-gh'), { scope: 'model:deploy', audience: 'registry.acme.internal', task_id: 'deploy' });
    expect(deploy.body.error).toBe('authorization_pending');
    const view = await t!.http.get(`/v1/credentials/${deploy.body.request_id}`).set(bearer(await actions('bob-gh')));
    expect(view.body).toMatchObject({ initiator: 'bob-gh', bound_claims: { run_id: '9876543210', run_attempt: '1' } });
    const approver = (sub: string, username: string) => okta!.token(sub, { preferred_username: username, groups: ['release-approvers'] });
    const decide = (token: string) =>
      t!.http.post(`/v1/credentials/${deploy.body.request_id}/approvals`).set(bearer(token)).send({ decision: 'approve', reason: 'ok', digest: view.body.digest });
    expect((await decide(await approver('00u1', 'bob@acme.com'))).status).toBe(403); // bob, through the people alias
    expect((await decide(await approver('00u2', 'alice@acme.com'))).body.status).toBe('approved');
    const collected = await exchange(await actions('bob-gh'), { request_id: deploy.body.request_id });
    expect(collected.status).toBe(200);
  });

  it('gitlab.yaml: a job exchanges its id_tokens token; a migration on a protected branch waits for two people', async () => {
    const { gitlab } = await run('gitlab.yaml');
    const job = (claims: Record<string, unknown> = {}) =>
      gitlab!.token('project_path:acme/app:ref_type:branch:ref:main', {
        aud: 'jit-broker',
        namespace_path: 'acme',
        project_path: 'acme/app',
        user_login: 'carol',
        user_email: 'carol@acme.com',
        pipeline_id: '1234',
        pipeline_source: 'push',
        job_id: '5678',
        ref: 'main',
        ref_type: 'branch',
        ref_protected: 'true',
        ...claims,
      });
    expect((await exchange(await job(), { scope: 'artifacts:read', audience: 'registry', task_id: 'build' })).status).toBe(200);
    const migrate = await exchange(await job(), { scope: 'db:migrate', audience: 'db', task_id: 'migrate' });
    expect(migrate.body.error).toBe('authorization_pending');
    const unprotected = await exchange(await job({ ref_protected: 'false' }), { scope: 'db:migrate', audience: 'db', task_id: 'migrate' });
    expect(unprotected.body.error).toBe('invalid_scope');
  });

  it('kubernetes.yaml: a pod exchanges its projected token; the nested claims match and bind the request to the pod', async () => {
    const { k8s } = await run('kubernetes.yaml');
    const pod = { name: 'deployer-7d9f', uid: '3f1c9a2e-0b5d-4c8e-9f6a-7e2d1b0c4a5f' };
    const claims = { 'kubernetes.io': { namespace: 'prod', serviceaccount: { name: 'deployer', uid: 'sa-1' }, pod } };
    const token = await k8s!.token('system:serviceaccount:prod:deployer', claims);
    const issued = await t!.http.post('/v1/credentials').set(bearer(token)).send({ task_id: 'sync', scopes: ['queue:publish'], audience: 'queue' });
    expect(issued.status).toBe(201);
    const view = await t!.http.get(`/v1/credentials/${issued.body.request_id}`).set(bearer(token));
    expect(view.body.bound_claims).toEqual({ 'kubernetes.io': { pod: { uid: pod.uid } } });
    // The same names flattened into one claim are another claim: no pod uid, refused.
    const flat = await k8s!.token('system:serviceaccount:prod:deployer', { 'kubernetes.io.namespace': 'prod', 'kubernetes.io.pod.uid': pod.uid });
    expect((await t!.http.post('/v1/credentials').set(bearer(flat)).send({ task_id: 'sync', scopes: ['queue:publish'], audience: 'queue' })).status).toBe(401);
    // Another namespace's deployer is not prod's.
    const staging = await k8s!.token('system:serviceaccount:prod:deployer', { 'kubernetes.io': { ...claims['kubernetes.io'], namespace: 'staging' } });
    expect((await t!.http.post('/v1/credentials').set(bearer(staging)).send({ task_id: 'sync', scopes: ['queue:publish'], audience: 'queue' })).status).toBe(403);
  });

  it('spiffe.yaml: a JWT-SVID without iss, as SPIRE issues it, exchanges for a credential', async () => {
    const { spire } = await run('spiffe.yaml');
    const svid = await spire!.token('spiffe://example.org/ns/billing/sa/api', { iss: undefined });
    const issued = await t!.http.post('/v1/credentials').set(bearer(svid)).send({ task_id: 'charge', scopes: ['payments:read'], audience: 'payments' });
    expect(issued.status).toBe(201);
    const other = await spire!.token('spiffe://other.org/ns/billing/sa/api', { iss: undefined });
    expect((await t!.http.post('/v1/credentials').set(bearer(other)).send({ task_id: 'charge', scopes: ['payments:read'], audience: 'payments' })).status).toBe(401);
  });

  it('sso.yaml: an on-call engineer asks for a production shell and another person approves it', async () => {
    const { entra } = await run('sso.yaml');
    const person = (sub: string, username: string, groups: string[]) => entra!.token(sub, { aud: 'jit-console', preferred_username: username, groups });
    const carol = await person('c-1', 'carol@acme.com', ['on-call']);
    expect((await t!.http.post('/v1/credentials').set(bearer(carol)).send({ task_id: 'look', scopes: ['logs:read'], audience: 'logs' })).status).toBe(201);
    const shell = await t!.http.post('/v1/credentials').set(bearer(carol)).send({ task_id: 'fix', scopes: ['prod:shell'], audience: 'prod', justification: 'INC-42' });
    expect(shell.status).toBe(202);
    const alice = await person('a-1', 'alice@acme.com', ['release-approvers']);
    const approved = await t!.http
      .post(`/v1/credentials/${shell.body.request_id}/approvals`)
      .set(bearer(alice))
      .send({ decision: 'approve', reason: 'INC-42 is real', digest: shell.body.digest });
    expect(approved.body.status).toBe('approved');
  });

  it('ml-release.yaml: each step of one model by its own pipeline; the trainer never deploys what it trained, its approver never registers it', async () => {
    const { github, okta } = await run('ml-release.yaml');
    const run_ = (repository: string, actor: string) =>
      github!.token(`repo:acme/${repository}:ref:refs/heads/main`, { repository: `acme/${repository}`, actor, run_id: '1', run_attempt: '1' });
    const ask = async (token: string, scope: string, model: string, audience = 'registry.acme.internal') =>
      t!.http.post('/v1/credentials').set(bearer(token)).send({ task_id: scope, scopes: [scope], audience, authorization_details: [{ type: 'model', identifier: model }] });
    const approve = async (id: string, digest: string, username: string) =>
      t!.http.post(`/v1/credentials/${id}/approvals`).set(bearer(await okta!.token(username, { preferred_username: username, groups: ['ml-release'] }))).send({ decision: 'approve', reason: 'ok', digest });

    expect((await ask(await run_('ml-training', 'bob-gh'), 'model:train', 'fraud-v7')).status).toBe(201);
    expect((await ask(await run_('ml-eval', 'carol'), 'model:evaluate', 'fraud-v7')).status).toBe(201);
    const registering = await ask(await run_('model-registry', 'dave'), 'model:register', 'fraud-v7');
    expect(registering.status).toBe(202);
    expect((await approve(registering.body.request_id, registering.body.digest, 'bob@acme.com')).status).toBe(403); // bob trained it
    expect((await approve(registering.body.request_id, registering.body.digest, 'alice@acme.com')).status).toBe(200);
    expect((await ask(await run_('model-registry', 'dave'), 'model:register', 'ltv-v1')).status).toBe(403); // not a registry model
    // The release pipeline, in a run bob started, may not deploy what bob trained; erin's run may.
    expect((await ask(await run_('ml-release', 'bob-gh'), 'model:deploy', 'fraud-v7', 'serving.acme.internal')).status).toBe(403);
    const deploying = await ask(await run_('ml-release', 'erin'), 'model:deploy', 'fraud-v7', 'serving.acme.internal');
    expect(deploying.status).toBe(202);
    expect((await approve(deploying.body.request_id, deploying.body.digest, 'alice@acme.com')).status).toBe(403); // alice approved its registration
    expect((await approve(deploying.body.request_id, deploying.body.digest, 'frank@acme.com')).status).toBe(200);
  });
});
