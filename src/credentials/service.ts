import type { Logger } from 'pino';
import { requireRole, type Identity } from '../identity/index.js';
import type { Notifier } from '../notify/index.js';
import { quietObserver, refusalOutcome, type BrokerObserver } from '../observability/observer.js';
import {
  effectiveStatus,
  isOwner,
  issuedView,
  maySee,
  pendingView,
  requestDigest,
  requestView,
  type IssuedView,
  type PendingView,
  type RequestView,
} from '../requests/index.js';
import type { Settings } from '../settings/index.js';
import { toEpochSeconds, toIso, type Clock } from '../shared/clock.js';
import { decodeCursor, encodeCursor } from '../shared/cursor.js';
import { uuidv7 } from '../shared/ids.js';
import { SHOWING } from '../shared/invisible.js';
import { BrokerError, Conflict, InvalidRequest, NotFound, PolicyDenied, SeparationOfDuties } from '../shared/errors.js';
import { isLive, type RequestRecord, type RequestState, type RequestStatus, type Store } from '../store/index.js';
import { mintAccessToken, readOwnToken, sha256Token, type Keyring, type MintedToken } from '../tokens/index.js';
import { admissionProbe, judgeAdmission, refusalEvent, separationError } from './admission.js';

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

export type CredentialService = ReturnType<typeof createCredentialService>;

const notVisible = (id: string) => new NotFound(`No request ${id} that you may see.`);

/** The approvers a token and its `token.issued` event name. */
const approversOf = (approvals: RequestState['approvals']) =>
  approvals.filter((a) => a.decision === 'approve').map((a) => ({ ...a.approver, at: toIso(a.at) }));

/**
 * The life of a grant: asked for, decided by policy (and by approvers, elsewhere), minted and
 * recorded, collected, completed, revoked. Every change is one store operation that writes the
 * change with its audit events, and a token leaves only after that operation has committed.
 */
export function createCredentialService(deps: CredentialServiceDeps) {
  const { issuer, settings, store, keyring, notifier, logger, clock } = deps;
  const observer = deps.observer ?? quietObserver;

  function mint(request: RequestRecord, approvals: RequestState['approvals'], now: number): Promise<MintedToken> {
    return mintAccessToken(
      keyring,
      issuer,
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
      },
      now,
      { clockSkewMs: settings().config.clockSkew },
    );
  }

  const issuedEvent = (request: RequestRecord, token: MintedToken, approvals: RequestState['approvals']) => {
    const approvers = approversOf(approvals);
    return {
      type: 'token.issued' as const,
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
    };
  };

  const issuanceOf = (request: RequestRecord, token: MintedToken) => ({
    jti: token.jti,
    requestId: request.id,
    tokenSha256: token.sha256,
    kid: token.kid,
    issuedAt: token.issuedAt,
    expiresAt: token.expiresAt,
  });

  /** A request, for whoever may see it; anyone else learns nothing, not even that it exists. */
  async function visibleState(identity: Identity, id: string): Promise<RequestState> {
    const state = await store.requests.state(id);
    if (!state || !maySee(settings(identity).policy, identity, state.request)) throw notVisible(id);
    return state;
  }

  /** Ends a live grant: the request is revoked and, if a token was minted, so is the token. */
  async function end(identity: Identity, id: string, reason: string): Promise<RequestView> {
    const { policy } = settings(identity);
    const now = clock();
    const after = await store.change(id, (state) => {
      if (!state || !maySee(policy, identity, state.request)) throw notVisible(id);
      const { request, issuance } = state;
      if (!isOwner(identity, request) && !identity.roles.has('admin')) {
        throw PolicyDenied.action('Only the requester or an admin may end this request.');
      }
      const status = effectiveStatus(request, now);
      if (!isLive(status)) throw new Conflict(`The request is already ${status}.`);
      const fields = { endedAt: now, revokeReason: reason, revokedBy: { iss: identity.iss, sub: identity.sub } };
      return {
        transition: { from: [request.status], to: 'revoked', fields },
        events: [
          {
            type: issuance ? 'token.revoked' : 'request.revoked',
            actor: identity,
            requestId: id,
            data: { reason, previous_status: request.status, ...(issuance ? { jti: issuance.jti } : {}) },
          },
        ],
        result: { ...state, request: { ...request, status: 'revoked' as const, ...fields } },
      };
    });
    return requestView(after, now);
  }

  async function createRequest(identity: Identity, input: CredentialInput): Promise<RequestOutcome> {
    const { config, policy } = settings(identity);
    const justification = input.justification?.trim() ? input.justification : null;
    if (input.breakGlass && visibleLength(justification ?? '') < config.breakGlass.justificationMinLength) {
      throw new InvalidRequest(`Break-glass needs a justification of at least ${config.breakGlass.justificationMinLength} characters.`, [
        { pointer: '#/justification', detail: `at least ${config.breakGlass.justificationMinLength} characters` },
      ]);
    }
    const now = clock();

    // Refused by policy before any fact is read: still counted toward the caller's rate, and recorded.
    let decision;
    try {
      decision = policy.decide(identity, input);
      const inRequest = policy.separationConflict(input.scopes, []);
      if (inRequest) throw separationError(inRequest.rule, inRequest.scopes);
    } catch (error) {
      if (!(error instanceof PolicyDenied) && !(error instanceof SeparationOfDuties)) throw error;
      return refuse(identity, input, error, now);
    }

    const id = uuidv7(now);
    const request: RequestRecord = {
      id,
      requester: { iss: identity.iss, sub: identity.sub },
      requesterIdp: identity.idp,
      initiator: identity.initiator ?? null,
      person: identity.person ?? null,
      boundClaims: identity.boundClaims ?? null,
      taskId: input.taskId,
      scopes: decision.scopes,
      audience: decision.audience,
      ttlSeconds: decision.ttlSeconds,
      justification,
      breakGlass: input.breakGlass,
      policyIds: decision.policyIds,
      digest: requestDigest({
        requestId: id,
        requester: identity,
        initiator: identity.initiator,
        boundClaims: identity.boundClaims,
        ...input,
        ttlSeconds: decision.ttlSeconds,
        justification,
      }),
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
        task_id: request.taskId,
        scopes: request.scopes,
        audience: request.audience,
        ttl_seconds: request.ttlSeconds,
        justification,
        break_glass: request.breakGlass,
        approvals_required: request.approvalsRequired,
        digest: request.digest,
        policy_ids: request.policyIds,
        ...(request.initiator !== null ? { initiator: request.initiator } : {}),
        ...(request.boundClaims !== null ? { bound_claims: request.boundClaims } : {}),
      },
    };

    const pending = decision.approvalsRequired > 0;
    // Sign first, record second: the token exists only in memory until its records (which
    // name its jti and hash) have committed, and is dropped if the admission refuses or fails.
    const token = pending ? undefined : await mint(request, [], now);
    const admitted: RequestRecord = token
      ? { ...request, status: 'issued', issuedAt: token.issuedAt, expiresAt: token.expiresAt }
      : request;
    const probe = admissionProbe(identity, decision.scopes, policy, config, { pending, breakGlass: input.breakGlass, now });
    const outcome = await store.admit(probe, (facts) => {
      const refusal = judgeAdmission(facts, config, { pending, breakGlass: input.breakGlass, now }, policy, decision.scopes);
      if (refusal) return { refuse: refusalEvent(identity, input, refusal, facts), result: refusal };
      const events: Parameters<Store['append']>[0][number][] = [created];
      if (input.breakGlass) {
        events.push({
          type: 'breakglass.used',
          actor: identity,
          requestId: id,
          data: { scopes: admitted.scopes, audience: admitted.audience, justification, ttl_seconds: admitted.ttlSeconds },
        });
      }
      if (token) events.push(issuedEvent(admitted, token, []));
      return {
        admit: {
          request: admitted,
          ...(token ? { issuance: issuanceOf(admitted, token) } : {}),
          ...(input.breakGlass && token ? { reviewDueAt: token.issuedAt + config.breakGlass.reviewWithin } : {}),
          events,
        },
        result: undefined,
      };
    });
    if (outcome instanceof BrokerError) throw outcome;

    if (!token) {
      notifier.notify('approval.requested', admitted);
      return { status: 'pending_approval', view: pendingView(admitted) };
    }
    if (input.breakGlass) {
      logger.warn(
        { request_id: id, requester: admitted.requester, scopes: admitted.scopes, audience: admitted.audience },
        'BREAK-GLASS credential issued; it awaits post-review',
      );
      notifier.notify('breakglass.used', admitted);
    }
    return { status: 'issued', view: issuedView(admitted, token) };
  }

  /** A request refused before any fact was read: counted toward the rate (which may turn it into a 429), and recorded. */
  async function refuse(identity: Identity, input: CredentialInput, error: BrokerError, now: number): Promise<never> {
    const { config, policy } = settings(identity);
    const probe = admissionProbe(identity, [], policy, config, { pending: false, breakGlass: false, now });
    const refusal = await store.admit(probe, (facts) => {
      const final = judgeAdmission(facts, config, { pending: false, breakGlass: false, now }, policy, []) ?? error;
      return { refuse: refusalEvent(identity, input, final, facts), result: final };
    });
    throw refusal;
  }

  return {
    /** `POST /v1/credentials`: issue at once, or open a request for approval. */
    async request(identity: Identity, input: CredentialInput): Promise<RequestOutcome> {
      let outcome: RequestOutcome;
      try {
        outcome = await createRequest(identity, input);
      } catch (error) {
        observer.credentialRequested(refusalOutcome(error instanceof BrokerError ? error.type : undefined));
        throw error;
      }
      observer.credentialRequested(outcome.status);
      if (outcome.status === 'issued') observer.tokenIssued({ breakGlass: outcome.view.break_glass, approved: false });
      return outcome;
    },

    async get(identity: Identity, id: string): Promise<RequestView> {
      return requestView(await visibleState(identity, id), clock());
    },

    /** `GET /v1/credentials`: the caller's own requests (its job's, where its issuer binds jobs), newest first. */
    async list(identity: Identity, status: RequestStatus | undefined, cursor: string | undefined, limit: number) {
      const now = clock();
      const after = decodeCursor(cursor, ['number', 'string'] as const);
      const page = await store.requests.owned(
        { iss: identity.iss, sub: identity.sub, boundClaims: identity.boundClaims ?? null },
        { status, now },
        after && { createdAt: after[0], id: after[1] },
        limit + 1,
      );
      const items = page.slice(0, limit);
      const tail = items[items.length - 1];
      const states = await store.requests.states(items);
      return {
        items: states.map((state) => requestView(state, now)),
        next_cursor: page.length > limit && tail ? encodeCursor([tail.createdAt, tail.id]) : null,
      };
    },

    /** The requester collects the token of an approved request, exactly once. */
    async collect(identity: Identity, id: string): Promise<IssuedView> {
      const now = clock();
      const notCollectable = (status: string) =>
        new Conflict(`The request is ${status}; only an approved request's token can be collected, and only once.`);
      const check = (state: RequestState | undefined): RequestState => {
        if (!state || !isOwner(identity, state.request)) throw notVisible(id);
        const status = effectiveStatus(state.request, now);
        if (status !== 'approved') throw notCollectable(status);
        return state;
      };
      const before = check(await store.requests.state(id));
      const token = await mint(before.request, before.approvals, now);
      const issued = await store.change(id, (current) => {
        const { request, approvals } = check(current);
        const fields = { issuedAt: token.issuedAt, expiresAt: token.expiresAt };
        const updated: RequestRecord = { ...request, status: 'issued', ...fields };
        return {
          transition: { from: ['approved'], to: 'issued', fields },
          issuance: issuanceOf(updated, token),
          events: [issuedEvent(updated, token, approvals)],
          result: updated,
        };
      });
      observer.tokenIssued({ breakGlass: issued.breakGlass, approved: true });
      return issuedView(issued, token);
    },

    complete: (identity: Identity, id: string) => end(identity, id, 'task_completed'),

    revoke: (identity: Identity, id: string, reason: string) => end(identity, id, reason),

    /** RFC 7009: the holder revokes its own token. Unknown, foreign or expired tokens are a no-op. */
    async revokeToken(identity: Identity, token: string): Promise<void> {
      const now = clock();
      const claims = await readOwnToken(keyring, issuer, token, now);
      const issuance = typeof claims?.jti === 'string' ? await store.issuances.get(claims.jti) : undefined;
      if (!issuance || issuance.tokenSha256 !== sha256Token(token)) return;
      await store.change(issuance.requestId, (state) => {
        if (!state || !isOwner(identity, state.request)) {
          throw PolicyDenied.action('The token was not issued to the caller.', 'unauthorized_client');
        }
        if (state.request.status !== 'issued') return { events: [], result: undefined };
        return {
          transition: {
            from: ['issued'],
            to: 'revoked',
            fields: { endedAt: now, revokeReason: 'revoked_by_holder', revokedBy: { iss: identity.iss, sub: identity.sub } },
          },
          events: [
            {
              type: 'token.revoked',
              actor: identity,
              requestId: state.request.id,
              data: { reason: 'revoked_by_holder', previous_status: 'issued', jti: issuance.jti },
            },
          ],
          result: undefined,
        };
      });
    },

    /** RFC 7662, for the `introspector` role: a token is active only while issued, unexpired and unrevoked. */
    async introspect(identity: Identity, token: string): Promise<Record<string, unknown>> {
      requireRole(identity, 'introspector');
      const now = clock();
      const claims = await readOwnToken(keyring, issuer, token, now);
      const issuance = typeof claims?.jti === 'string' ? await store.issuances.get(claims.jti) : undefined;
      if (!claims || !issuance || issuance.tokenSha256 !== sha256Token(token)) return { active: false };
      const request = await store.requests.get(issuance.requestId);
      if (!request || effectiveStatus(request, now) !== 'issued') return { active: false };
      return { active: true, token_type: 'Bearer', ...claims };
    },

    /** Revoked tokens not yet expired, for resource servers that keep a deny list. */
    async revocations(identity: Identity, cursor: string | undefined, limit: number) {
      requireRole(identity, 'introspector');
      const after = decodeCursor(cursor, ['string'] as const)?.[0];
      const page = await store.issuances.revokedUnexpired(clock(), after, limit + 1);
      const items = page.slice(0, limit).map((i) => ({ jti: i.jti, exp: toEpochSeconds(i.expiresAt) }));
      const tail = items[items.length - 1];
      return { items, next_cursor: page.length > limit && tail ? encodeCursor([tail.jti]) : null };
    },
  };
}

/**
 * CONTRACT section 4: `justificationMinLength` counts characters that show: letters, digits,
 * punctuation and symbols; not white space, format, combining or filler characters (SHOWING,
 * the same definition names are normalised with).
 */
const visibleLength = (text: string): number => text.match(SHOWING)?.length ?? 0;
