import { Router } from 'express';
import { z } from 'zod';
import type { BrokerDeps } from '../../usecases/deps';
import { requireAdmin } from '../admin-gate';

const streamId = z.string().regex(/^\d{1,20}-\d{1,20}$/, 'a stream id');
const exportQuery = z
  .strictObject({
    task: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,64}$/)
      .optional(),
    lease: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,64}$/)
      .optional(),
    identity: z.string().min(1).max(512).optional(),
    issuer: z.string().min(1).max(64).optional(),
    after: streamId.optional(),
    limit: z.coerce.number().int().min(1).max(10_000).default(1000),
  })
  .refine((query) => !query.issuer || Boolean(query.identity), {
    message: 'issuer goes with identity',
    path: ['issuer'],
  });

const sealsQuery = z.strictObject({
  after: streamId.optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});

/**
 * `GET /v1/audit/export`: events exactly as stored (their JSON as a string, which is what the chain hashes)
 * with the seals covering them, a page at a time, for `tasklease audit verify` and `audit export` to check
 * on the caller's side against keys the caller trusts. Without a filter, the whole log in order.
 */
export function auditExportRoutes(deps: BrokerDeps): Router {
  const router = Router();
  router.get('/v1/audit/export', requireAdmin(deps, 'view'), async (req, res) => {
    const query = exportQuery.parse(req.query);
    const filtered = Boolean(query.task || query.lease || query.identity);
    const entries = filtered
      ? await deps.audit.queryRaw({
          task: query.task,
          lease: query.lease,
          subject: query.identity,
          issuer: query.issuer,
          limit: query.limit,
          afterId: query.after,
        })
      : await deps.audit.entries(query.after, query.limit);
    const seals = await deps.audit.sealsCovering(entries.map((entry) => entry.id));
    res.json({
      entries: entries.map((entry) => ({ id: entry.id, event: entry.json })),
      seals: seals.map((seal) => ({ id: seal.id, seal: seal.jws })),
      next: entries.length === query.limit ? (entries[entries.length - 1]?.id ?? null) : null,
    });
  });
  /**
   * Every seal, in order, a page at a time: a full verify needs them all, including a seal whose events
   * were all deleted (an export only finds seals through the events that remain).
   */
  router.get('/v1/audit/seals', requireAdmin(deps, 'view'), async (req, res) => {
    const query = sealsQuery.parse(req.query);
    const seals = await deps.audit.seals(query.after, query.limit);
    res.json({
      seals: seals.map((seal) => ({ id: seal.id, seal: seal.jws })),
      next: seals.length === query.limit ? (seals[seals.length - 1]?.id ?? null) : null,
    });
  });
  return router;
}
