import { Router } from 'express';
import { NotFound } from '../../shared/errors.js';
import { isRequestId } from '../../shared/ids.js';
import type { AppDeps } from '../deps.js';
import { identityOf } from '../auth.js';
import { presentedProof } from '../dpop.js';
import { credentialRequestBody, decisionBody, noBody, noQuery, ownRequestsQuery, revokeBody, reviewBody } from '../schemas.js';
import { parseInput } from '../validation.js';

/** `/v1/credentials`: the requester's endpoints, and the decisions and reviews made on a request. */
export function credentialRoutes({ config, credentials, approvals, breakGlass }: AppDeps): Router {
  const router = Router({ caseSensitive: true });

  // A path segment that is no request id names no request: 404 at once, the segment not echoed
  // and never sent to the store (PostgreSQL refuses a NUL in text outright).
  router.param('id', (_req, _res, next, id: string) => next(isRequestId(id) ? undefined : new NotFound('No request that you may see has this id.')));

  // Unknown fields are refused (CONTRACT section 4), in a query too: only the listing takes one.
  router.use((req, _res, next) => {
    if (req.method !== 'GET' || req.path !== '/') parseInput(noQuery, req.query, 'query');
    next();
  });

  router.post('/', async (req, res) => {
    const body = parseInput(credentialRequestBody, req.body, 'body');
    const outcome = await credentials.request(identityOf(res), {
      taskId: body.task_id,
      scopes: body.scopes,
      audience: body.audience,
      ttlSeconds: body.ttl_seconds,
      justification: body.justification,
      breakGlass: body.break_glass,
      authorizationDetails: body.authorization_details,
    }, presentedProof(req, config.issuer));
    if (outcome.status === 'pending_approval') {
      res.status(202).location(`/v1/credentials/${outcome.view.request_id}`).json(outcome.view);
    } else {
      res.status(201).location(`/v1/credentials/${outcome.view.request_id}`).json(outcome.view);
    }
  });

  router.get('/', async (req, res) => {
    const { status, limit, cursor } = parseInput(ownRequestsQuery, req.query, 'query');
    res.json(await credentials.list(identityOf(res), status, cursor, limit));
  });

  router.get('/:id', async (req, res) => {
    res.json(await credentials.get(identityOf(res), req.params.id));
  });

  router.post('/:id/token', async (req, res) => {
    if (req.body !== undefined) parseInput(noBody, req.body, 'body');
    res.status(201).json(await credentials.collect(identityOf(res), req.params.id, undefined, presentedProof(req, config.issuer)));
  });

  router.post('/:id/complete', async (req, res) => {
    if (req.body !== undefined) parseInput(noBody, req.body, 'body');
    res.json(await credentials.complete(identityOf(res), req.params.id));
  });

  router.post('/:id/revoke', async (req, res) => {
    const { reason } = parseInput(revokeBody, req.body, 'body');
    res.json(await credentials.revoke(identityOf(res), req.params.id, reason));
  });

  router.post('/:id/approvals', async (req, res) => {
    res.json(await approvals.decide(identityOf(res), req.params.id, parseInput(decisionBody, req.body, 'body')));
  });

  router.post('/:id/review', async (req, res) => {
    res.json(await breakGlass.review(identityOf(res), req.params.id, parseInput(reviewBody, req.body, 'body')));
  });

  return router;
}
