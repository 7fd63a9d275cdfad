import { verifyDpopProof } from '../dpop/index.js';
import type { Policy } from '../policy/index.js';
import type { Settings } from '../settings/index.js';
import { InvalidDpopProof } from '../shared/errors.js';
import type { ProofUse } from '../store/index.js';

/** A DPoP proof as a request carried it, with the URL it was sent to (the broker's `issuer` plus the path). */
export interface PresentedProof {
  proof: string;
  url: string;
}

/** The key a token is bound to (RFC 9449 `cnf.jkt`), and the proof that showed it, used once. */
export interface Binding {
  jkt: string;
  /** Absent when the binding names a key without a proof by it (`dpop_jkt`: a sub-agent's own key). */
  proof?: ProofUse;
}

/**
 * The binding a proof gives, checked as RFC 9449 section 4.3 says; `jkt` when the proof must be
 * by that key (a request that waited with a proof, a bound parent). Undefined without a proof.
 */
export async function bindingOf(
  presented: PresentedProof | undefined,
  settings: Pick<Settings, 'config'>,
  now: number,
  jkt?: string | null,
): Promise<Binding | undefined> {
  if (!presented) return undefined;
  const verified = await verifyDpopProof(presented.proof, {
    method: 'POST',
    url: presented.url,
    algorithms: settings.config.dpop.algorithms,
    now,
    clockSkewMs: settings.config.clockSkew,
    ...(jkt ? { jkt } : {}),
  });
  return { jkt: verified.jkt, proof: { jti: verified.jti, expiresAt: verified.replayWindowEndsAt } };
}

/**
 * The proof a request made with one is polled or collected with: valid, and by its key (`jkt`),
 * so that its subject token alone learns nothing of it. Undefined without a proof, where the
 * request was made without one.
 */
export async function proofByRequestKey(
  presented: PresentedProof | undefined,
  settings: Pick<Settings, 'config'>,
  now: number,
  jkt: string | null,
  why: string,
): Promise<Binding | undefined> {
  const binding = await bindingOf(presented, settings, now, jkt);
  if (jkt !== null && !binding) throw new InvalidDpopProof('missing', `DPoP: this request was made with a proof; ${why}.`);
  return binding;
}

/**
 * `requireDpop` (CONTRACT section 2): a request holding such a scope without a valid proof
 * presented with it is refused, naming DPoP. A binding to a key no proof showed (`dpop_jkt`) does
 * not count: it only chooses the key, and proves nothing of who asks.
 */
export function requireBinding(policy: Policy, scopes: readonly string[], binding: Binding | undefined, why = 'send a DPoP proof with the request'): void {
  if (binding?.proof) return;
  const bound = scopes.filter((scope) => policy.scope(scope)?.requireDpop);
  if (bound.length > 0) throw new InvalidDpopProof('missing', `DPoP: ${bound.join(', ')} ${bound.length > 1 ? 'are' : 'is'} only issued DPoP-bound; ${why}.`);
}

/** A proof seen before, here or on any replica. */
export const replayed = () => new InvalidDpopProof('replayed', 'DPoP: this proof was used before; make a fresh one (a new jti) for each request.');
