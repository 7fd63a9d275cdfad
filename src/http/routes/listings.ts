import { Router } from 'express';
import type { AppDeps } from '../app.js';
import { identityOf } from '../auth.js';
import { breakGlassQuery, pageQuery } from '../schemas.js';
import { parseInput } from '../validation.js';

/** The `/v1` listings of approvers, break-glass reviewers and resource servers. */
export function listingRoutes({ credentials, approvals, breakGlass }: AppDeps): Router {
  const router = Router();

  router.get('/approvals', (req, res) => {
    const { limit, cursor } = parseInput(pageQuery, req.query, 'query');
    res.json(approvals.pending(identityOf(res), cursor, limit));
  });

  router.get('/break-glass', (req, res) => {
    const { review, limit, cursor } = parseInput(breakGlassQuery, req.query, 'query');
    res.json(breakGlass.list(identityOf(res), review, cursor, limit));
  });

  router.get('/revocations', (req, res) => {
    const { limit, cursor } = parseInput(pageQuery, req.query, 'query');
    res.json(credentials.revocations(identityOf(res), cursor, limit));
  });

  return router;
}
