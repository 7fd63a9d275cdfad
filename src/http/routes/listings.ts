import { Router } from 'express';
import type { AppDeps } from '../deps.js';
import { identityOf } from '../auth.js';
import { breakGlassQuery, pageQuery } from '../schemas.js';
import { parseInput } from '../validation.js';

/** The `/v1` listings of approvers, break-glass reviewers and resource servers. */
export function listingRoutes({ tokens, approvals, breakGlass }: AppDeps): Router {
  const router = Router({ caseSensitive: true });

  router.get('/approvals', async (req, res) => {
    const { limit, cursor } = parseInput(pageQuery, req.query, 'query');
    res.json(await approvals.pending(identityOf(res), cursor, limit));
  });

  // Who may ask comes before what is asked (CONTRACT section 4: a caller without the role gets 403).
  router.get('/break-glass', async (req, res) => {
    breakGlass.authorizeListing(identityOf(res));
    const { review, limit, cursor } = parseInput(breakGlassQuery, req.query, 'query');
    res.json(await breakGlass.list(identityOf(res), review, cursor, limit));
  });

  router.get('/revocations', async (req, res) => {
    tokens.authorizeIntrospector(identityOf(res));
    const { limit, cursor } = parseInput(pageQuery, req.query, 'query');
    res.json(await tokens.revocations(identityOf(res), cursor, limit));
  });

  return router;
}
