import { Router } from 'express';
import type { PrimaryWatch } from '../../redis/primary-watch';
import type { Metrics } from '../../observability/metrics';
import type { SigningKeyRing } from '../../signing/signing-keys';

/** What /readyz says when the primary cannot be used; the detail (the address) goes to the log. */
const NOT_READY = {
  unreachable: 'Redis is not reachable',
  'not-primary': 'connected to a Redis replica, not the primary',
  evicting: 'Redis may evict keys (maxmemory-policy is not noeviction)',
} as const;

export function systemRoutes(deps: {
  primary: Pick<PrimaryWatch, 'check'>;
  metrics: Metrics;
  signingKeys?: SigningKeyRing;
}): Router {
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
  // Ready means the connection writes to a primary that keeps leases (read now, so a failover or a
  // reconnect to a replica shows at once); nothing is preloaded, so this holds however many leases exist.
  router.get('/readyz', async (_req, res) => {
    const { usable, problem } = await deps.primary.check();
    if (usable) return void res.json({ status: 'ready' });
    res.status(503).json({ error: 'unavailable', message: NOT_READY[problem?.kind ?? 'unreachable'] });
  });
  router.get('/metrics', async (_req, res) => {
    res.set('Content-Type', deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });
  return router;
}
