import { requireRole, type Identity } from '../identity/index.js';
import { effectiveStatus, isOwner, revokeWithLine } from '../requests/index.js';
import { toEpochSeconds, type Clock } from '../shared/clock.js';
import { keysetPage } from '../shared/cursor.js';
import { PolicyDenied } from '../shared/errors.js';
import type { Store } from '../store/index.js';
import { readOwnToken } from './inspect.js';
import type { Keyring } from './keyring.js';
import { sha256Token } from './mint.js';

export interface TokenServiceDeps {
  /** The broker's own `iss`. */
  issuer: string;
  store: Store;
  keyring: Keyring;
  clock: Clock;
}

export type TokenService = ReturnType<typeof createTokenService>;

/** The OAuth surface of minted tokens: introspection (RFC 7662), revocation by the holder (RFC 7009), the deny list. */
export function createTokenService({ issuer, store, keyring, clock }: TokenServiceDeps) {
  /** A token this broker minted and recorded, with its claims; undefined for anything else. */
  async function recorded(token: string, now: number) {
    const claims = await readOwnToken(keyring, issuer, token, now);
    const issuance = typeof claims?.jti === 'string' ? await store.issuances.get(claims.jti) : undefined;
    return claims && issuance && issuance.tokenSha256 === sha256Token(token) ? { claims, issuance } : undefined;
  }

  const introspectorOnly = (identity: Identity) => requireRole(identity, 'introspector');

  return {
    /** Refuses (403) anyone but introspectors, before what they ask is read; introspection and the revocation list check it too. */
    authorizeIntrospector: introspectorOnly,

    /** RFC 7662, for the `introspector` role: a token is active only while issued, unexpired and unrevoked. */
    async introspect(identity: Identity, token: string): Promise<Record<string, unknown>> {
      introspectorOnly(identity);
      const now = clock();
      const found = await recorded(token, now);
      const request = found && (await store.requests.get(found.issuance.requestId));
      if (!found || !request || effectiveStatus(request, now) !== 'issued') return { active: false };
      // RFC 9449 section 6.2: a bound token is introspected as of the DPoP type, its cnf among the claims.
      return { active: true, token_type: found.claims.cnf ? 'DPoP' : 'Bearer', ...found.claims };
    },

    /** RFC 7009: the holder revokes its own token. Unknown, foreign or expired tokens are a no-op. */
    async revoke(identity: Identity, token: string): Promise<void> {
      const now = clock();
      const found = await recorded(token, now);
      if (!found) return;
      const { issuance } = found;
      await store.change(
        issuance.requestId,
        (state) => {
          if (!state || !isOwner(identity, state.request)) throw PolicyDenied.action('The token was not issued to the caller.', 'unauthorized_client');
          if (state.request.status !== 'issued') return { events: [], result: undefined };
          const fields = { endedAt: now, revokeReason: 'revoked_by_holder', revokedBy: { iss: identity.iss, sub: identity.sub } };
          return { ...revokeWithLine(state, identity, 'revoked_by_holder', fields), transition: { from: ['issued'], to: 'revoked', fields }, result: undefined };
        },
        { descendants: true },
      );
    },

    /** Revoked tokens not yet expired, for resource servers that keep a deny list. */
    revocations(identity: Identity, cursor: string | undefined, limit: number) {
      introspectorOnly(identity);
      return keysetPage({
        cursor,
        shape: ['string'] as const,
        limit,
        read: (after, count) => store.issuances.revokedUnexpired(clock(), after?.[0], count),
        key: (issuance) => [issuance.jti],
        view: (page) => page.map((i) => ({ jti: i.jti, exp: toEpochSeconds(i.expiresAt) })),
      });
    },
  };
}
