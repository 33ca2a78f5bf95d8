import { Router } from 'express';
import type { Redis } from 'ioredis';
import type { Metrics } from '../../observability/metrics';
import type { SigningKeyRing } from '../../signing/signing-keys';

export function systemRoutes(deps: { redis: Redis; metrics: Metrics; signingKeys?: SigningKeyRing }): Router {
  const router = Router();
  if (deps.signingKeys) {
    const jwks = deps.signingKeys.jwks;
    router.get('/.well-known/jwks.json', (_req, res) => {
      res.set('Cache-Control', 'public, max-age=300').json(jwks);
    });
  }
  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  // Ready means Redis answers; nothing is preloaded, so this holds however many leases exist.
  router.get('/readyz', async (_req, res) => {
    try {
      await deps.redis.ping();
      res.json({ status: 'ready' });
    } catch {
      res.status(503).json({ error: 'unavailable', message: 'Redis is not reachable' });
    }
  });
  router.get('/metrics', async (_req, res) => {
    res.set('Content-Type', deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });
  return router;
}
