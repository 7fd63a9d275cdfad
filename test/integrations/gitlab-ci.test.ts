import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { decodeJwt } from 'jose';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, liveClock, listen, startTestBroker, type TestBroker } from '../helpers/broker.js';
import { createTestIssuer, type TestIssuer } from '../helpers/issuer.js';
import { jitBundle } from '../helpers/jit-process.js';
import { tempDir } from '../helpers/temp.js';

/**
 * integrations/gitlab/jit-broker.gitlab-ci.yml as a runner runs a job extending it: the
 * template's before_script and the job's script in one bash, its after_script in another, with
 * the variables GitLab sets (the id token among them) and the `jit` CLI on PATH.
 */

const ROOT = resolve(import.meta.dirname, '../..');
const template = YAML.parse(readFileSync(join(ROOT, 'integrations/gitlab/jit-broker.gitlab-ci.yml'), 'utf8')) as {
  '.jit-broker': { id_tokens: Record<string, { aud: string }>; before_script: string[]; after_script: string[] };
};
const hidden = template['.jit-broker'];

/** The job of the README's .gitlab-ci.yml: what a reader copies is what is tested. */
function readmeJob(): { extends: string; variables: Record<string, string>; script: string[] } {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const block = [...readme.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1] as string).find((text) => text.includes('extends: .jit-broker'));
  const pipeline = YAML.parse(block as string) as Record<string, unknown> & { include: { remote: string }[] };
  expect(pipeline.include[0]?.remote).toMatch(/\/integrations\/gitlab\/jit-broker\.gitlab-ci\.yml$/);
  return Object.values(pipeline).find((value) => (value as { extends?: string }).extends === '.jit-broker') as never;
}

let t: TestBroker;
let server: Awaited<ReturnType<typeof listen>>;
let gitlab: TestIssuer;
let bin: string;

beforeAll(async () => {
  gitlab = await createTestIssuer('https://gitlab.example.com');
  t = await startTestBroker({
    clock: liveClock(),
    configure(config) {
      (config.identity as { issuers: unknown[] }).issuers.push({
        name: 'gitlab',
        kind: 'workload',
        issuer: gitlab.iss,
        jwks: gitlab.jwks,
        audiences: ['jit-broker'],
        algorithms: ['ES256'],
        initiatorClaim: 'user_login',
        bindClaims: ['pipeline_id'],
      });
      (config.policies as unknown[]).push({ id: 'gl', match: { issuer: 'gitlab', subject: 'project_path:acme/app:*' }, scopes: ['artifacts:read', 'model:deploy'] });
    },
  });
  server = await listen(t);
  bin = tempDir('jit-gitlab-bin-');
  writeFileSync(join(bin, 'jit'), `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(await jitBundle())} "$@"\n`);
  chmodSync(join(bin, 'jit'), 0o755);
});
afterAll(async () => {
  await server?.close();
  await t?.close();
});

interface Job {
  project: string;
  token: string;
  main: { code: number | null; log: string };
  after: { code: number | null; log: string };
}

/** Runs a job that extends .jit-broker: before_script + script in one shell, after_script in another, as GitLab does. */
async function runJob(variables: Record<string, string>, script: string[], pipeline = '4711'): Promise<Job> {
  const project = tempDir('jit-gitlab-project-');
  mkdirSync(project, { recursive: true });
  // The job's own script: it uses the credential, and keeps it for the test to look at.
  writeFileSync(join(project, 'publish.sh'), '#!/bin/sh\nprintf "%s" "$JIT_TOKEN" > used-token\necho published\n');
  chmodSync(join(project, 'publish.sh'), 0o755);
  const idToken = await gitlab.token('project_path:acme/app:ref_type:branch:ref:main', {
    aud: hidden.id_tokens.JIT_ID_TOKEN?.aud,
    project_path: 'acme/app',
    pipeline_id: pipeline,
    user_login: 'gl-dev',
  });
  const env = {
    PATH: `${bin}:${process.env.PATH}`,
    HOME: project,
    CI: 'true',
    GITLAB_CI: 'true',
    CI_PROJECT_DIR: project,
    CI_PROJECT_PATH: 'acme/app',
    CI_PIPELINE_ID: pipeline,
    CI_JOB_ID: '99001',
    CI_JOB_NAME: 'publish',
    JIT_ID_TOKEN: idToken,
    ...variables,
  };
  const shell = async (lines: string[]) => {
    const child = spawn('bash', ['-c', `set -eo pipefail\n${lines.join('\n')}`], { cwd: project, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stdout.on('data', (chunk: Buffer) => (log += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (log += chunk.toString()));
    const code = await new Promise<number | null>((done) => child.on('close', done));
    return { code, log };
  };
  const main = await shell([...hidden.before_script, ...script]);
  const after = await shell(hidden.after_script);
  return { project, token: idToken, main, after };
}

const admin = () => t.as.person('root', ['admins']);
const readmeVariables = () => ({ ...readmeJob().variables, BROKER_URL: server.url });

describe('the GitLab CI template', () => {
  it('declares the id token for the broker\'s audience', () => {
    expect(hidden.id_tokens).toEqual({ JIT_ID_TOKEN: { aud: 'jit-broker' } });
    expect(readmeJob().extends).toBe('.jit-broker');
  });

  it('gives the job\'s script a credential in $JIT_TOKEN, never in the log, and completes the grant in after_script', async () => {
    const job = await runJob(readmeVariables(), readmeJob().script);
    expect(job.main.code).toBe(0);
    const credential = readFileSync(join(job.project, 'used-token'), 'utf8');
    const claims = decodeJwt(credential);
    expect(claims).toMatchObject({ sub: 'project_path:acme/app:ref_type:branch:ref:main', scope: 'artifacts:read', aud: 'registry.acme.internal', task_id: 'acme/app/-/jobs/99001' });
    expect(job.main.log).toBe(`jit-broker: credential for artifacts:read on registry.acme.internal in $JIT_TOKEN (request ${claims.request_id})\npublished\n`);
    for (const log of [job.main.log, job.after.log]) {
      expect(log).not.toContain(credential);
      expect(log).not.toContain(job.token);
    }

    expect(job.after).toEqual({ code: 0, log: `request ${claims.request_id} is now revoked\n` });
    expect(existsSync(join(job.project, '.jit-broker-request-99001'))).toBe(false);
    const view = await t.http.get(`/v1/credentials/${claims.request_id}`).set(bearer(await admin()));
    expect(view.body).toMatchObject({ status: 'revoked', revoke_reason: 'task_completed', bound_claims: { pipeline_id: '4711' } });
  });

  it('stops the job with the CLI\'s exit code when the broker refuses, before the script runs', async () => {
    const job = await runJob({ ...readmeVariables(), JIT_SCOPES: 'db:admin' }, readmeJob().script);
    expect(job.main.code).toBe(3);
    expect(job.main.log).toBe('jit request: policy_denied: Scope db:admin refused: no policy grants them to this identity.\njit-broker: no credential (jit exit code 3)\n');
    expect(existsSync(join(job.project, 'used-token'))).toBe(false);
    expect(job.after).toEqual({ code: 0, log: '' });

    const unset = await runJob({ BROKER_URL: server.url, JIT_AUDIENCE: 'x' }, readmeJob().script);
    expect(unset.main.code).not.toBe(0);
    expect(unset.main.log).toContain('JIT_SCOPES: set JIT_SCOPES');
  });

  it('passes the lifetime and the wait on; a request still pending exits 75 and after_script ends it', async () => {
    const job = await runJob({ ...readmeVariables(), JIT_SCOPES: 'model:deploy', JIT_WAIT: '0', JIT_TTL: '2m' }, readmeJob().script, '4712');
    expect(job.main.code).toBe(75);
    const id = /jit collect (\S+)/.exec(job.main.log)?.[1] as string;
    expect(job.main.log).toContain('jit-broker: no credential (jit exit code 75)');
    expect(job.after).toEqual({ code: 0, log: `request ${id} is now revoked\n` });
    const view = await t.http.get(`/v1/credentials/${id}`).set(bearer(await admin()));
    expect(view.body).toMatchObject({ status: 'revoked', revoke_reason: 'task_completed', ttl_seconds: 120 });
  });
});
