import { BrokerTokenError } from '../../src/verifier/index.js';

/** What a verification ends in: 'ok', the verifier's refusal code, or a note of anything else it threw. */
export const verifyOutcome = (promise: Promise<unknown>): Promise<string> =>
  promise.then(
    () => 'ok',
    (error: unknown) => (error instanceof BrokerTokenError ? error.code : `unexpected ${String(error)}`),
  );
