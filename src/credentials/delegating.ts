import { canonicalJson } from '../shared/canonical-json.js';
import { checkMayAct } from '../delegation/index.js';
import type { Identity } from '../identity/index.js';
import { effectiveStatus } from '../requests/index.js';
import type { AuthorizationDetail } from '../shared/authorization-details.js';
import { InvalidAuthorizationDetails, InvalidDpopProof, InvalidRequest, InvalidTarget, PolicyDenied } from '../shared/errors.js';
import type { RequestRecord, RequestState } from '../store/index.js';
import type { Settings } from '../settings/index.js';
import { readOwnToken, sha256Token } from '../tokens/index.js';
import { bindingOf, requireBinding, type PresentedProof } from './binding.js';
import type { CredentialServiceDeps } from './grant.js';
import { actorRecord, capped, planDelegated, planned, planPlain } from './planning.js';
import type { createRequesting, CredentialInput, RequestOutcome, Subject } from './requesting.js';

/** What a child token's exchange asks; whatever it leaves out is its parent's. */
export interface ChildInput {
  /** RFC 9449 `dpop_jkt`: bind the child to this key (a sub-agent's own) rather than the proof's. */
  dpopJkt?: string | undefined;
  scopes?: string[] | undefined;
  audience?: string | undefined;
  ttlSeconds?: number | undefined;
  taskId?: string | undefined;
  justification?: string | undefined;
  breakGlass?: boolean | undefined;
  authorizationDetails?: AuthorizationDetail[] | undefined;
}

/**
 * Who a request is for, and who acts (CONTRACT section 1, "Agents"): a caller asking for itself;
 * an agent acting for a principal, allowed by a `delegation` rule (and by the subject token's
 * `may_act`), the token the principal's and narrowed to the rule; and a child of a broker token,
 * narrower than its parent, judged on its root grant's subject under the running configuration.
 * Each is planned here and admitted by the one request path.
 */
export function createDelegating(deps: CredentialServiceDeps, requesting: ReturnType<typeof createRequesting>) {
  const { settings, store, keyring, issuer, clock } = deps;

  /** A broker token's grant, live: signed by this broker, recorded, not revoked or expired. */
  async function liveParent(token: string, now: number): Promise<{ request: RequestRecord; jti: string }> {
    const claims = await readOwnToken(keyring, issuer, token, now);
    const issuance = typeof claims?.jti === 'string' ? await store.issuances.get(claims.jti) : undefined;
    const request = issuance && issuance.tokenSha256 === sha256Token(token) ? await store.requests.get(issuance.requestId) : undefined;
    if (!issuance || !request) throw new InvalidRequest('The subject_token is not a live access token of this broker.');
    const status = effectiveStatus(request, now);
    if (status !== 'issued') throw new InvalidRequest(`The subject_token's grant is ${status}: a child token needs a live parent.`);
    return { request, jti: issuance.jti };
  }

  /**
   * The root grant of a parent's line: its subject, the scopes whose steps the whole line takes
   * part in, and the approvals that cover the whole line.
   */
  async function rootOf(parent: RequestRecord): Promise<RequestState> {
    const root = await store.requests.state(parent.rootId);
    if (!root) throw new InvalidRequest('The subject_token\'s root grant is not on record.');
    return root;
  }

  /** A root grant's subject as it was verified, its person resolved by the running configuration. */
  function rootSubject(root: RequestRecord, people: Settings['people']): Subject {
    return {
      iss: root.requester.iss,
      sub: root.requester.sub,
      idp: root.requesterIdp,
      claims: root.subjectClaims ?? {},
      ...(root.initiator !== null ? { initiator: root.initiator } : {}),
      ...(root.person !== null ? { personKey: root.person, person: people.personOf(root.person) } : {}),
      ...(root.boundClaims !== null ? { boundClaims: root.boundClaims } : {}),
    };
  }

  return {
    /** The caller asks for itself. */
    async plain(identity: Identity, input: CredentialInput, presented?: PresentedProof): Promise<RequestOutcome> {
      const running = settings(identity);
      const binding = await bindingOf(presented, running, clock());
      const plan = await requesting.judge(identity, identity, [], input, () => planPlain(running, identity, input, binding));
      return requesting.admit(identity, plan);
    },

    /**
     * An agent acts for a principal: a rule lets this actor act for this subject, and lists every
     * scope; each scope is also the subject's own by its policies; the lifetime is capped by the
     * rule; the subject token's `may_act`, when it has one, names this actor.
     */
    async delegated(subject: Identity, actor: Identity, input: CredentialInput, presented?: PresentedProof): Promise<RequestOutcome> {
      const running = settings(subject);
      const binding = await bindingOf(presented, running, clock());
      const plan = await requesting.judge(subject, subject, [actorRecord(actor)], input, () => planDelegated(running, subject, actor, input, binding));
      return requesting.admit(subject, plan);
    },

    /**
     * A holder of a broker token exchanges it for a narrower child: scopes a subset of the
     * parent's, its audience, an `exp` no later than its own, its authorization details, no new
     * approval. A new actor (`actor_token`) joins the front of the chain, allowed by a rule for
     * the root subject; without one the chain stays. Judged on the root grant's subject under the
     * running configuration: its policies must still grant every scope, and a rule must still let
     * the current actor act for it.
     */
    async child(token: string, actor: Identity | undefined, ask: ChildInput, presented?: PresentedProof): Promise<RequestOutcome> {
      const running = settings(actor);
      const { policy, delegation } = running;
      const now = clock();
      const live = await liveParent(token, now);
      const { request: root, approvals } = await rootOf(live.request);
      const parent = { ...live, rootScopes: root.scopes, rootApprovals: approvals };
      // A bound parent is exchanged only with a proof by its key; the child is bound to that key,
      // or to `dpop_jkt`'s (a sub-agent's own key).
      const proven = await bindingOf(presented, running, now, parent.request.dpopJkt);
      if (parent.request.dpopJkt !== null && !proven) {
        throw new InvalidDpopProof('missing', 'DPoP: the subject_token is DPoP-bound; exchange it with a DPoP proof by its key.');
      }
      const jkt = ask.dpopJkt ?? proven?.jkt ?? parent.request.dpopJkt;
      const binding = jkt === null ? undefined : { jkt, ...(proven?.proof ? { proof: proven.proof } : {}) };
      const subject = rootSubject(root, running.people);
      const actors = [...(actor ? [actorRecord(actor)] : []), ...(parent.request.act ?? [])];
      if (actors.length > delegation.maxDepth) {
        throw new InvalidRequest(`An act chain of ${actors.length} actors is longer than delegation.maxDepth allows (${delegation.maxDepth}).`);
      }
      if (actor) checkMayAct(subject.claims, actor);
      if (ask.audience !== undefined && ask.audience !== parent.request.audience) {
        throw new InvalidTarget(`A child token is for its parent's audience (${parent.request.audience}), never another.`);
      }
      const inherited = parent.request.authorizationDetails ?? [];
      if (ask.authorizationDetails !== undefined && canonicalJson(ask.authorizationDetails) !== canonicalJson(inherited)) {
        throw new InvalidAuthorizationDetails('A child token keeps its parent\'s authorization_details: none may be added, changed or dropped.');
      }
      if (ask.breakGlass && !parent.request.breakGlass) throw new InvalidRequest('A child of a grant that is not break-glass is not break-glass either.');
      const remaining = Math.floor((parent.request.expiresAt - now) / 1000);
      if (remaining < 1) throw new InvalidRequest('The subject_token\'s grant is expired: a child token needs a live parent.');
      const input: CredentialInput = {
        taskId: ask.taskId ?? parent.request.taskId,
        scopes: ask.scopes ?? parent.request.scopes,
        audience: parent.request.audience,
        ttlSeconds: ask.ttlSeconds,
        justification: ask.justification ?? parent.request.justification ?? undefined,
        breakGlass: parent.request.breakGlass,
        ...(inherited.length > 0 ? { authorizationDetails: inherited } : {}),
      };
      requireBinding(policy, input.scopes, binding);
      const plan = await requesting.judge(actor, subject, actors, input, () => planned(running, input, () => {
        const wider = input.scopes.filter((scope) => !parent.request.scopes.includes(scope));
        if (wider.length > 0) throw PolicyDenied.scopes(wider, 'a child token holds only scopes of its parent');
        const current = actors[0];
        const allowed = current ? delegation.allow(current, subject, input.scopes) : undefined;
        const decision = capped(policy.decide(subject, input), Math.min(remaining, allowed?.maxTtlSeconds ?? Number.POSITIVE_INFINITY));
        return { subject, actors, rule: allowed?.rule, parent, input, binding, decision: { ...decision, approvalsRequired: 0 } };
      }));
      return requesting.admit(actor, plan);
    },
  };
}
