export type BrokerTokenErrorCode =
  | 'missing' // verifyRequest: no access token in the Authorization header
  | 'invalid' // not a broker token: bad signature, wrong issuer or type, malformed
  | 'expired'
  | 'audience'
  | 'scope'
  | 'approvals'
  | 'break_glass'
  | 'delegation' // delegated where delegation is forbidden, or not delegated where it is required
  | 'dpop' // a bad, replayed or missing DPoP proof, or a token presented with the wrong scheme for its binding
  | 'revoked'
  | 'unavailable'; // the JWKS or the revocation check could not be reached, or the replay cache is full: refused, fail closed

export class BrokerTokenError extends Error {
  constructor(
    readonly code: BrokerTokenErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'BrokerTokenError';
  }
}
