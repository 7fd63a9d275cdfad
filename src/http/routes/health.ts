import { Router } from 'express';
import { Unavailable } from '../../shared/errors.js';
import type { AppDeps } from '../deps.js';

/**
 * How long a readiness verdict is reused: /readyz is unauthenticated, so a flood of probes must
 * not become a flood of store work; a load balancer polling every few seconds still sees a
 * failure within this.
 */
export const READINESS_CACHE_MS = 1_000;

export function healthRoutes({ store, keyring, metrics, clock }: AppDeps): Router {
  const router = Router({ caseSensitive: true });
  let verdict: { at: number; ready: Promise<unknown> } | undefined;

  /** Ready means able to grant: the store takes a write, a signing key is at hand, and every key of the cluster opens here. */
  const readiness = () => {
    const now = clock();
    if (!verdict || now - verdict.at >= READINESS_CACHE_MS) {
      const ready = Promise.all([store.probe(), keyring.signingKey(), keyring.checkKeysOpen()]);
      ready.catch(() => {}); // observed by each caller below
      verdict = { at: now, ready };
    }
    return verdict.ready;
  };

  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  router.get('/readyz', async (req, res) => {
    try {
      await readiness();
    } catch (error) {
      req.log.warn({ err: error }, 'not ready');
      throw new Unavailable('The broker cannot grant credentials right now.');
    }
    res.json({ status: 'ready' });
  });
  router.get('/metrics', async (req, res) => {
    let text: string;
    try {
      text = await metrics.text();
    } catch (error) {
      // A worker of several asks the primary for everyone's metrics; no answer is no scrape.
      req.log.warn({ err: error }, 'metrics unavailable');
      throw new Unavailable('The metrics cannot be gathered right now.');
    }
    res.type(metrics.registry.contentType).send(text);
  });
  return router;
}
