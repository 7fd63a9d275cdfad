import { actClaim } from '../delegation/index.js';
import type { Settings } from '../settings/index.js';
import { toIso, type Clock } from '../shared/clock.js';
import { NotFound } from '../shared/errors.js';
import type { AuditEntry, NewIssuance, RequestRecord, RequestState, Store } from '../store/index.js';
import { mintAccessToken, type Keyring, type MintedToken } from '../tokens/index.js';
import type { Identity } from '../identity/index.js';
import type { Logger } from 'pino';
import type { Notifier } from '../notify/index.js';
import type { BrokerObserver } from '../observability/observer.js';

/** What the parts of the credential service share. */
export interface CredentialServiceDeps {
  /** The broker's own `iss`. */
  issuer: string;
  settings: (caller?: Identity) => Settings;
  store: Store;
  keyring: Keyring;
  notifier: Notifier;
  logger: Logger;
  clock: Clock;
  /** Told of every answered request and every minted token. */
  observer?: Pick<BrokerObserver, 'credentialRequested' | 'tokenIssued'>;
}

export const notVisible = (id: string) => new NotFound(`No request ${id} that you may see.`);

/** The approvers a token and its `token.issued` event name. */
export const approversOf = (approvals: RequestState['approvals']) =>
  approvals.filter((a) => a.decision === 'approve').map((a) => ({ ...a.approver, at: toIso(a.at) }));

/**
 * Signs the token of a request; it exists only in memory until its records have committed.
 * `notAfter` (ms) caps its `exp`: a child's is no later than its parent's.
 */
export function mintFor(
  deps: Pick<CredentialServiceDeps, 'keyring' | 'issuer' | 'settings'>,
  request: RequestRecord,
  approvals: RequestState['approvals'],
  now: number,
  notAfter?: number,
): Promise<MintedToken> {
  return mintAccessToken(
    deps.keyring,
    deps.issuer,
    {
      sub: request.requester.sub,
      aud: request.audience,
      idp: request.requesterIdp,
      scopes: request.scopes,
      taskId: request.taskId,
      requestId: request.id,
      approvers: approversOf(approvals),
      breakGlass: request.breakGlass,
      ttlSeconds: request.ttlSeconds,
      notAfter,
      authorizationDetails: request.authorizationDetails,
      act: actClaim(request.act ?? []),
      ...(request.dpopJkt !== null ? { cnf: { jkt: request.dpopJkt } } : {}),
    },
    now,
    { clockSkewMs: deps.settings().config.clockSkew },
  );
}

export function issuedEvent(request: RequestRecord, token: MintedToken, approvals: RequestState['approvals'], parentJti?: string): AuditEntry {
  const approvers = approversOf(approvals);
  const act = actClaim(request.act ?? []);
  return {
    type: 'token.issued',
    actor: request.requester,
    requestId: request.id,
    data: {
      jti: token.jti,
      kid: token.kid,
      scopes: request.scopes,
      audience: request.audience,
      expires_at: toIso(token.expiresAt),
      break_glass: request.breakGlass,
      ...(approvers.length > 0 ? { approvers } : {}),
      ...(request.authorizationDetails !== null ? { authorization_details: request.authorizationDetails } : {}),
      ...(act ? { act } : {}),
      ...(request.dpopJkt !== null ? { cnf: { jkt: request.dpopJkt } } : {}),
      ...(parentJti !== undefined ? { parent_jti: parentJti } : {}),
    },
  };
}

/** The record of a minted token; `grantedBy` names, per scope, the policy it is counted under (the first that granted it). */
export const issuanceOf = (request: RequestRecord, token: MintedToken, grantedBy: Readonly<Record<string, string>>): NewIssuance => ({
  grantedBy,
  jti: token.jti,
  requestId: request.id,
  tokenSha256: token.sha256,
  kid: token.kid,
  issuedAt: token.issuedAt,
  expiresAt: token.expiresAt,
});
