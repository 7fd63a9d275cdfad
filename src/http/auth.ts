import type { RequestHandler, Response } from 'express';
import type { Identity } from '../identity/index.js';
import type { Metrics } from '../observability/index.js';
import type { SettingsHolder } from '../settings/index.js';
import { InvalidToken, type TokenRejection } from '../shared/errors.js';

export interface Authenticator {
  /**
   * Verifies an identity token, counting each refusal. `alongside`: another identity of the same
   * request (the actor of a token exchange), whose settings this one is verified under too, so
   * that a reload between the two never judges one request by two configurations.
   */
  verify(token: string, alongside?: Identity): Promise<Identity>;
  /** Middleware: `Authorization: Bearer <identity JWT>` or 401. */
  requireIdentity: RequestHandler;
}

/**
 * Verifies with the identity rules of the current settings (trusted issuers, roles, person
 * keys), which a reload replaces with the rest of the configuration, and binds the identity to
 * those settings: the rest of its request is judged by them too.
 */
export function createAuthenticator(
  settings: Pick<SettingsHolder, 'current' | 'for' | 'bind'>,
  metrics: Pick<Metrics, 'identityRejections'>,
): Authenticator {
  const verify = async (token: string, alongside?: Identity) => {
    const rules = alongside ? settings.for(alongside) : settings.current();
    try {
      const identity = await rules.identity.verify(token);
      settings.bind(identity, rules);
      return identity;
    } catch (error) {
      if (error instanceof InvalidToken) metrics.identityRejections.inc({ reason: metricReason(error.rejection) });
      throw error;
    }
  };
  return {
    verify,
    async requireIdentity(req, res, next) {
      const match = /^Bearer +([^\s]+) *$/i.exec(req.headers.authorization ?? '');
      if (!match) {
        metrics.identityRejections.inc({ reason: 'missing' });
        throw new InvalidToken('missing');
      }
      res.locals.identity = await verify(match[1] as string);
      next();
    },
  };
}

/**
 * /metrics is unauthenticated, so it counts refusals coarsely: the exact check a token failed
 * (signature, audience, ...) would tell a forger which part to fix. The log keeps the detail.
 */
function metricReason(rejection: TokenRejection): 'invalid' | 'jwks_unavailable' {
  return rejection === 'jwks_unavailable' ? 'jwks_unavailable' : 'invalid';
}

/** The identity `requireIdentity` put on this response. */
export function identityOf(res: Response): Identity {
  const identity = res.locals.identity as Identity | undefined;
  if (!identity) throw new Error('route is missing requireIdentity');
  return identity;
}
