import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { AuditLog } from '../audit/log.js';
import type { BrokerConfig } from '../config/index.js';
import { requireRole, sameIdentity, type Identity } from '../identity/index.js';
import type { Policy } from '../policy/index.js';
import type { Clock } from '../shared/clock.js';
import { toEpochSeconds, toIso } from '../shared/clock.js';
import { decodeCursor, encodeCursor } from '../shared/cursor.js';
import {
  Conflict,
  InvalidRequest,
  NotFound,
  PolicyDenied,
  RateLimited,
  SeparationOfDuties,
  type BrokerError,
} from '../shared/errors.js';
import { LIVE_STATUSES, type RequestRecord, type Store } from '../store/index.js';
import { mintAccessToken, readOwnToken, sha256Token, type Keyring, type MintedToken } from '../tokens/index.js';
import type { Notifier } from '../notify/webhooks.js';
import {
  effectiveStatus,
  issuedView,
  maySee,
  pendingView,
  requestDetails,
  requestDigest,
  requestView,
  type IssuedView,
  type PendingView,
  type RequestDetails,
  type RequestView,
} from '../requests/index.js';

const DAY_MS = 86_400_000;

/** A credential request as the caller asked for it, already checked for shape. */
export interface CredentialInput {
  taskId: string;
  scopes: string[];
  audience: string;
  ttlSeconds?: number | undefined;
  justification?: string | undefined;
  breakGlass: boolean;
}

export type RequestOutcome =
  | { status: 'issued'; view: IssuedView }
  | { status: 'pending_approval'; view: PendingView };

export interface CredentialServiceDeps {
  config: Pick<BrokerConfig, 'issuer' | 'approval' | 'breakGlass'>;
  policy: Policy;
  store: Store;
  audit: AuditLog;
  keyring: Keyring;
  notifier: Notifier;
  logger: Logger;
  clock: Clock;
}

export type CredentialService = ReturnType<typeof createCredentialService>;

/**
 * The life of a grant: asked for, decided by policy (and by approvers, elsewhere), minted and
 * recorded, collected, completed, revoked. Every change is written with its audit event in one
 * transaction, and a token leaves only after that transaction commits.
 */
export function createCredentialService(deps: CredentialServiceDeps) {
  const { config, policy, store, audit, keyring, notifier, logger, clock } = deps;

  /** Refuses a grant that would let the identity hold two scopes of one `separation` rule at once. */
  function checkSeparation(identity: Identity, scopes: readonly string[], now: number): void {
    const live = store.requests.live(identity, now).map((request) => ({ requestId: request.id, scopes: request.scopes }));
    const conflict = policy.separationConflict(scopes, live);
    if (!conflict) return;
    const against = conflict.requestId ? ` with live request ${conflict.requestId}` : '';
    throw new SeparationOfDuties(
      `Separation rule "${conflict.rule}": one identity may not hold ${conflict.scopes.join(' and ')} at once${against}.`,
      { extensions: { rule: conflict.rule, scopes: conflict.scopes, ...(conflict.requestId ? { conflicting_request_id: conflict.requestId } : {}) } },
    );
  }

  /** At most `maxPerIdentityPerDay` break-glass grants in any 24 hours; counted under the write lock. */
  function checkBreakGlassQuota(identity: Identity, now: number): void {
    const { count, oldest } = store.requests.breakGlassSince(identity, now - DAY_MS);
    if (count < config.breakGlass.maxPerIdentityPerDay) return;
    const retryAfter = oldest === null ? DAY_MS / 1000 : Math.max(1, Math.ceil((oldest + DAY_MS - now) / 1000));
    throw new RateLimited(
      `Break-glass quota spent: ${config.breakGlass.maxPerIdentityPerDay} grants per identity in any 24 hours.`,
      retryAfter,
    );
  }

  /** Every refusal of an authenticated caller leaves an audit event; failing to write it refuses no less. */
  function recordRefusal(identity: Identity, input: CredentialInput, error: BrokerError): void {
    try {
      store.transaction(() =>
        audit.append({
          type: 'request.refused',
          actor: identity,
          data: {
            problem: error.type,
            detail: error.detail,
            task_id: input.taskId,
            scopes: input.scopes,
            audience: input.audience,
            break_glass: input.breakGlass,
          },
        }),
      );
    } catch (auditError) {
      logger.error({ err: auditError }, 'could not audit a refused request');
    }
  }

  function recordIssuance(request: RequestRecord, token: MintedToken, approvers: unknown[]): void {
    store.issuances.insert({
      jti: token.jti,
      requestId: request.id,
      tokenSha256: token.sha256,
      kid: token.kid,
      issuedAt: token.issuedAt,
      expiresAt: token.expiresAt,
    });
    audit.append({
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
      },
    });
  }

  function mint(request: RequestRecord, approvers: RequestDetails['approvals'], now: number): Promise<MintedToken> {
    return mintAccessToken(
      keyring,
      config.issuer,
      {
        sub: request.requester.sub,
        aud: request.audience,
        idp: request.requesterIdp,
        scopes: request.scopes,
        taskId: request.taskId,
        requestId: request.id,
        approvers: approvers.map((a) => ({ ...a.approver, at: toIso(a.at) })),
        breakGlass: request.breakGlass,
        ttlSeconds: request.ttlSeconds,
      },
      now,
    );
  }

  function find(identity: Identity, id: string): RequestRecord {
    const request = store.requests.get(id);
    if (!request || !maySee(policy, identity, request)) throw new NotFound(`No request ${id} that you may see.`);
    return request;
  }

  /** Ends a live grant: the request is revoked and, if a token was minted, so is the token. */
  function end(identity: Identity, id: string, reason: string): RequestView {
    const now = clock();
    const ended = store.transaction(() => {
      const request = find(identity, id);
      if (!sameIdentity(identity, request.requester) && !identity.roles.has('admin')) {
        throw PolicyDenied.action('Only the requester or an admin may end this request.');
      }
      const status = effectiveStatus(request, now);
      if (!LIVE_STATUSES.includes(status)) throw new Conflict(`The request is already ${status}.`);
      const updated = store.requests.transition(id, LIVE_STATUSES, 'revoked', {
        endedAt: now,
        revokeReason: reason,
        revokedBy: { iss: identity.iss, sub: identity.sub },
      }) as RequestRecord;
      const issuance = request.status === 'issued' ? store.issuances.forRequest(id) : undefined;
      audit.append({
        type: issuance ? 'token.revoked' : 'request.revoked',
        actor: identity,
        requestId: id,
        data: { reason, previous_status: request.status, ...(issuance ? { jti: issuance.jti } : {}) },
      });
      return updated;
    });
    return requestView(requestDetails(store, ended), now);
  }

  return {
    /** `POST /v1/credentials`: issue at once, or open a request for approval. */
    async request(identity: Identity, input: CredentialInput): Promise<RequestOutcome> {
      try {
        return await createRequest(identity, input);
      } catch (error) {
        if (error instanceof PolicyDenied || error instanceof SeparationOfDuties || error instanceof RateLimited) {
          recordRefusal(identity, input, error);
        }
        throw error;
      }
    },

    get(identity: Identity, id: string): RequestView {
      return requestView(requestDetails(store, find(identity, id)), clock());
    },

    /** The requester collects the token of an approved request, exactly once. */
    async collect(identity: Identity, id: string): Promise<IssuedView> {
      const request = store.requests.get(id);
      if (!request || !sameIdentity(identity, request.requester)) throw new NotFound(`No request ${id} that you may see.`);
      const now = clock();
      const notCollectable = (status: string) =>
        new Conflict(`The request is ${status}; only an approved request's token can be collected, and only once.`);
      if (effectiveStatus(request, now) !== 'approved') throw notCollectable(effectiveStatus(request, now));

      const approvals = store.approvals.list(id).filter((a) => a.decision === 'approve');
      const token = await mint(request, approvals, now);
      const issued = store.transaction(() => {
        const current = store.requests.get(id) as RequestRecord;
        if (effectiveStatus(current, now) !== 'approved') throw notCollectable(effectiveStatus(current, now));
        const updated = store.requests.transition(id, ['approved'], 'issued', {
          issuedAt: token.issuedAt,
          expiresAt: token.expiresAt,
        }) as RequestRecord;
        recordIssuance(updated, token, approvals.map((a) => ({ ...a.approver, at: toIso(a.at) })));
        return updated;
      });
      return issuedView(issued, token);
    },

    complete: (identity: Identity, id: string) => end(identity, id, 'task_completed'),

    revoke: (identity: Identity, id: string, reason: string) => end(identity, id, reason),

    /** RFC 7009: the holder revokes its own token. Unknown, foreign or expired tokens are a no-op. */
    async revokeToken(identity: Identity, token: string): Promise<void> {
      const now = clock();
      const claims = await readOwnToken(keyring, config.issuer, token, now);
      const issuance = typeof claims?.jti === 'string' ? store.issuances.get(claims.jti) : undefined;
      if (!issuance || issuance.tokenSha256 !== sha256Token(token)) return;
      const request = store.requests.get(issuance.requestId) as RequestRecord;
      if (!sameIdentity(identity, request.requester)) {
        throw PolicyDenied.action('The token was not issued to the caller.', 'unauthorized_client');
      }
      store.transaction(() => {
        const revoked = store.requests.transition(request.id, ['issued'], 'revoked', {
          endedAt: now,
          revokeReason: 'revoked_by_holder',
          revokedBy: { iss: identity.iss, sub: identity.sub },
        });
        if (revoked) {
          audit.append({
            type: 'token.revoked',
            actor: identity,
            requestId: request.id,
            data: { reason: 'revoked_by_holder', previous_status: 'issued', jti: issuance.jti },
          });
        }
      });
    },

    /** RFC 7662, for the `introspector` role: a token is active only while issued, unexpired and unrevoked. */
    async introspect(identity: Identity, token: string): Promise<Record<string, unknown>> {
      requireRole(identity, 'introspector');
      const now = clock();
      const claims = await readOwnToken(keyring, config.issuer, token, now);
      const issuance = typeof claims?.jti === 'string' ? store.issuances.get(claims.jti) : undefined;
      if (!claims || !issuance || issuance.tokenSha256 !== sha256Token(token)) return { active: false };
      const request = store.requests.get(issuance.requestId) as RequestRecord;
      if (effectiveStatus(request, now) !== 'issued') return { active: false };
      return { active: true, token_type: 'Bearer', ...claims };
    },

    /** Revoked tokens not yet expired, for resource servers that keep a deny list. */
    revocations(identity: Identity, cursor: string | undefined, limit: number) {
      requireRole(identity, 'introspector');
      const after = decodeCursor(cursor, ['string'] as const)?.[0];
      const page = store.issuances.revokedUnexpired(clock(), after, limit + 1);
      const items = page.slice(0, limit).map((i) => ({ jti: i.jti, exp: toEpochSeconds(i.expiresAt) }));
      const tail = items[items.length - 1];
      return { items, next_cursor: page.length > limit && tail ? encodeCursor([tail.jti]) : null };
    },
  };

  async function createRequest(identity: Identity, input: CredentialInput): Promise<RequestOutcome> {
    const justification = input.justification?.trim() ? input.justification : null;
    if (input.breakGlass && visibleLength(justification ?? '') < config.breakGlass.justificationMinLength) {
      throw new InvalidRequest(`Break-glass needs a justification of at least ${config.breakGlass.justificationMinLength} characters.`, [
        { pointer: '#/justification', detail: `at least ${config.breakGlass.justificationMinLength} characters` },
      ]);
    }
    const decision = policy.decide(identity, input);
    const now = clock();
    const id = randomUUID();
    const base: RequestRecord = {
      id,
      requester: { iss: identity.iss, sub: identity.sub },
      requesterIdp: identity.idp,
      initiator: identity.initiator ?? null,
      taskId: input.taskId,
      scopes: decision.scopes,
      audience: decision.audience,
      ttlSeconds: decision.ttlSeconds,
      justification,
      breakGlass: input.breakGlass,
      policyIds: decision.policyIds,
      digest: requestDigest({ requestId: id, requester: identity, ...input, ttlSeconds: decision.ttlSeconds, justification }),
      approvalsRequired: decision.approvalsRequired,
      status: 'pending_approval',
      createdAt: now,
      expiresAt: now + config.approval.timeout,
      decidedAt: null,
      issuedAt: null,
      endedAt: null,
      revokeReason: null,
      revokedBy: null,
    };
    const created = {
      type: 'request.created' as const,
      actor: identity,
      requestId: id,
      data: {
        idp: identity.idp,
        task_id: base.taskId,
        scopes: base.scopes,
        audience: base.audience,
        ttl_seconds: base.ttlSeconds,
        justification,
        break_glass: base.breakGlass,
        approvals_required: base.approvalsRequired,
        digest: base.digest,
        policy_ids: base.policyIds,
        ...(base.initiator !== null ? { initiator: base.initiator } : {}),
      },
    };

    if (decision.approvalsRequired > 0) {
      store.transaction(() => {
        checkSeparation(identity, decision.scopes, now);
        store.requests.insert(base);
        audit.append(created);
      });
      notifier.notify('approval.requested', base);
      return { status: 'pending_approval', view: pendingView(base) };
    }

    // Sign first (it is async), record second: the token exists only in memory until its
    // issuance row and audit events have committed, and is dropped if they do not.
    const token = await mint(base, [], now);
    const issued: RequestRecord = { ...base, status: 'issued', issuedAt: token.issuedAt, expiresAt: token.expiresAt };
    store.transaction(() => {
      checkSeparation(identity, decision.scopes, now);
      if (input.breakGlass) checkBreakGlassQuota(identity, now);
      store.requests.insert(issued);
      audit.append(created);
      if (input.breakGlass) {
        store.reviews.insert(id, token.issuedAt + config.breakGlass.reviewWithin);
        audit.append({
          type: 'breakglass.used',
          actor: identity,
          requestId: id,
          data: { scopes: issued.scopes, audience: issued.audience, justification, ttl_seconds: issued.ttlSeconds },
        });
      }
      recordIssuance(issued, token, []);
    });
    if (input.breakGlass) {
      logger.warn(
        { request_id: id, requester: issued.requester, scopes: issued.scopes, audience: issued.audience },
        'BREAK-GLASS credential issued; it awaits post-review',
      );
      notifier.notify('breakglass.used', issued);
    }
    return { status: 'issued', view: issuedView(issued, token) };
  }
}

/** Characters a reader sees: not padding at either end, nor zero-width and other format characters. */
const visibleLength = (text: string): number => [...text.trim().replace(/\p{Cf}/gu, '')].length;
