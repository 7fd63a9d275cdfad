/**
 * What the domain reports as it happens, for metrics: services count through this small
 * interface and never see Prometheus. Each method is called once the thing has happened (after
 * its commit), and never throws.
 */

/** How a credential request ended: issued or pending, else the problem type it was refused with. */
export const REQUEST_OUTCOMES = [
  'issued',
  'pending_approval',
  'policy_denied',
  'separation_of_duties',
  'rate_limited',
  'invalid_request',
  'unavailable',
  'error',
] as const;
export type RequestOutcome = (typeof REQUEST_OUTCOMES)[number];

export const DECISIONS = ['approve', 'deny'] as const;
export const DELIVERY_OUTCOMES = ['delivered', 'failed'] as const;

export interface BrokerObserver {
  /** A credential request (`POST /v1/credentials`, or a token exchange without `request_id`) was answered. */
  credentialRequested(outcome: RequestOutcome): void;
  /** A token was minted and recorded: at once, by break-glass, or collected after approval. */
  tokenIssued(grant: { breakGlass: boolean; approved: boolean }): void;
  /** An approver's decision was recorded. */
  decisionRecorded(decision: (typeof DECISIONS)[number]): void;
  /** A webhook delivery ended: delivered, or failed after every retry. */
  webhookDelivered(outcome: (typeof DELIVERY_OUTCOMES)[number]): void;
}

/** Counts nothing: for parts built without metrics. */
export const quietObserver: BrokerObserver = {
  credentialRequested: () => {},
  tokenIssued: () => {},
  decisionRecorded: () => {},
  webhookDelivered: () => {},
};

/** The outcome label of a refusal: its problem type when it is one a request can end with. */
export function refusalOutcome(problemType: string | undefined): RequestOutcome {
  const known = REQUEST_OUTCOMES as readonly string[];
  return problemType !== undefined && known.includes(problemType) && problemType !== 'issued' && problemType !== 'pending_approval'
    ? (problemType as RequestOutcome)
    : 'error';
}
