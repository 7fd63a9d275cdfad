// @ts-check
/**
 * The action's post step, run when the job ends however it ends: the task is done, so the grant
 * ends now rather than at its expiry. A grant that already ended is not a failure.
 */
import { ActionError, brokerClient, info, input, runStep, state, warning } from './lib.mjs';

runStep(async () => {
  const id = state('request_id');
  if (!id) return;
  const call = brokerClient(input('broker-url', { required: true }), input('identity-audience') || 'jit-broker');
  try {
    const { body } = await call('POST', `/v1/credentials/${encodeURIComponent(id)}/complete`);
    info(`request ${id} completed: the grant is ${body.status}`);
  } catch (failure) {
    if (!(failure instanceof ActionError)) throw failure;
    // It expires on its own within minutes: worth a warning, not a failed job.
    warning(`could not complete request ${id}: ${failure.message}`);
  }
});
