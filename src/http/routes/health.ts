import { Router } from 'express';
import { Unavailable } from '../../shared/errors.js';
import type { AppDeps } from '../app.js';

export function healthRoutes({ store, keyring, metrics, clock }: AppDeps): Router {
  const router = Router();
  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  /** Ready means able to grant: the store takes a write and a signing key is at hand. */
  router.get('/readyz', async (req, res) => {
    try {
      store.probeWrite(clock());
      await keyring.signingKey();
    } catch (error) {
      req.log.warn({ err: error }, 'not ready');
      throw new Unavailable('The broker cannot grant credentials right now.');
    }
    res.json({ status: 'ready' });
  });
  router.get('/metrics', async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  return router;
}
