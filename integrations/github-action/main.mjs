// @ts-check
/**
 * The action's main step: the job's OIDC token in, a credential out. A high-risk scope waits
 * for approval (input `wait`); the credential is masked before it reaches any output, then
 * exported. The request id is kept for the post step, which ends the grant. A wait asks the
 * broker every 5s (env JIT_POLL_INTERVAL, as for the CLI).
 */
import { ActionError, booleanInput, brokerClient, duration, exportVariable, info, input, mask, runStep, saveState, setOutput } from './lib.mjs';


runStep(async () => {
  const call = brokerClient(input('broker-url', { required: true }), input('identity-audience') || 'jit-broker');
  const scopes = input('scopes', { required: true }).split(/[\s,]+/).filter(Boolean);
  const audience = input('audience', { required: true });
  const ttl = input('ttl');
  const justification = input('justification');
  const waitMs = duration(input('wait') || '15m', 'wait');
  const pollMs = duration(process.env.JIT_POLL_INTERVAL || '5s', 'JIT_POLL_INTERVAL');
  const env = process.env;
  const taskId = input('task-id') || `${env.GITHUB_REPOSITORY}/actions/runs/${env.GITHUB_RUN_ID}/attempts/${env.GITHUB_RUN_ATTEMPT}#${env.GITHUB_JOB}`;

  const created = await call('POST', '/v1/credentials', {
    task_id: taskId,
    scopes,
    audience,
    ...(ttl ? { ttl_seconds: Math.max(1, Math.floor(duration(ttl, 'ttl') / 1000)) } : {}),
    ...(justification ? { justification } : {}),
    break_glass: booleanInput('break-glass'),
  });
  const id = String(created.body.request_id);
  setOutput('request-id', id);
  if (booleanInput('complete')) saveState('request_id', id);

  let issued = created.body;
  if (created.status === 202) {
    info(`request ${id} needs ${created.body.approvals_required} approval(s); digest ${created.body.digest}`);
    info(`an approver runs: jit approve ${id} --reason "..."`);
    issued = await waitForApproval(call, id, waitMs, pollMs);
  }
  const token = String(issued.access_token);
  mask(token);
  setOutput('token', token);
  setOutput('expires-at', String(issued.expires_at));
  const variable = input('export-env');
  if (variable) exportVariable(variable, token);
  info(`credential issued for ${scopes.join(' ')} on ${audience}: request ${id}, expires ${issued.expires_at}${variable ? `, in $${variable}` : ''}`);
});

/**
 * Polls the request until it is approved, then collects its token.
 * @param {ReturnType<typeof brokerClient>} call @param {string} id @param {number} waitMs @param {number} pollMs
 */
async function waitForApproval(call, id, waitMs, pollMs) {
  const path = `/v1/credentials/${encodeURIComponent(id)}`;
  const started = Date.now();
  for (;;) {
    const { body: view } = await call('GET', path);
    if (view.status === 'approved') return (await call('POST', `${path}/token`)).body;
    if (view.status !== 'pending_approval') {
      /** @type {{ decision: string, sub: string, reason: string } | undefined} */
      const denial = view.approvals?.find((/** @type {{ decision: string }} */ a) => a.decision === 'deny');
      throw new ActionError(`request ${id} is ${view.status}${denial ? ` (denied by ${denial.sub}: ${denial.reason})` : ''}; no credential`);
    }
    const elapsed = Date.now() - started;
    if (elapsed >= waitMs) throw new ActionError(`request ${id} is still pending approval after ${Math.round(elapsed / 1000)}s`);
    info(`waiting for approval of ${id}: ${view.approvals.length}/${view.approvals_required}, ${Math.round(elapsed / 1000)}s elapsed`);
    await new Promise((resolve) => setTimeout(resolve, Math.min(pollMs, waitMs - elapsed)));
  }
}
