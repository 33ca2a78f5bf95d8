import { Router } from 'express';
import { z } from 'zod';
import { BrokerError } from '../../domain/errors';
import {
  identityKey,
  isSettled,
  LEASE_STATES,
  TERMINAL_LEASE_STATES,
  type Lease,
  type LeaseState,
} from '../../domain/types';
import type { BrokerDeps } from '../../usecases/deps';
import { revocationProgress, startRevocation } from '../../usecases/follow-revocation';
import { selectLeases } from '../../usecases/request-revocation';
import { callerText } from '../text';
import { retryIrrevocable } from '../../usecases/retry-irrevocable';
import { requireAdmin } from '../admin-gate';
import { callerOf } from '../authenticate';
import { leaseView } from '../views';

const id = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/);
const reason = callerText(500);
/** Which leases: by task, by identity (a subject, optionally of one issuer), by grant, by provider. */
const selectorFields = {
  task: id.optional(),
  identity: z.string().min(1).max(512).optional(),
  issuer: z.string().min(1).max(64).optional(),
  grant: z.string().min(1).max(64).optional(),
  provider: z.enum(['jwt', 'aws-sts', 'vault']).optional(),
};
const issuerGoesWithIdentity: [
  (s: { issuer?: string; identity?: string }) => boolean,
  { message: string; path: string[] },
] = [(s) => !s.issuer || Boolean(s.identity), { message: 'issuer goes with identity', path: ['issuer'] }];
const limit = z.coerce.number().int().min(1).max(10_000).default(1000);

const listQuery = z
  .strictObject({ ...selectorFields, state: z.enum(LEASE_STATES).optional(), limit })
  .refine(...issuerGoesWithIdentity);
const selectorSchema = z
  .strictObject({ ...selectorFields, all: z.literal(true).optional() })
  .refine((s) => Boolean(s.all) !== Boolean(s.task || s.identity || s.grant || s.provider), {
    message: 'give one or more of task, identity, grant, provider — or all: true alone',
  })
  .refine(...issuerGoesWithIdentity);
/** `force`: if the backend cannot revoke, close the lease anyway as `force-closed` (never `revoked`). */
const force = z.boolean().default(false);
const bulkBody = z.strictObject({
  selector: selectorSchema,
  reason,
  dryRun: z.boolean().default(false),
  force,
});
/** A retry needs no reason (the lease keeps the one it was revoked for); one given goes to the audit. */
const retryBody = z.strictObject({ reason: reason.optional() });
const auditQuery = z.strictObject({
  task: id.optional(),
  lease: id.optional(),
  identity: selectorFields.identity,
  issuer: selectorFields.issuer,
  limit,
});

type Selector = {
  task?: string;
  identity?: string;
  issuer?: string;
  grant?: string;
  provider?: string;
  settled?: boolean;
};

/** The identity selector is a subject, optionally narrowed to one issuer; without it, every issuer's. */
async function findLeases(deps: BrokerDeps, selector: Selector): Promise<Lease[]> {
  const issuers = selector.issuer ? [selector.issuer] : deps.config.issuers.map((issuer) => issuer.name);
  const identities = selector.identity
    ? issuers.map((issuer) => identityKey(issuer, selector.identity as string))
    : [undefined];
  const found = new Map<string, Lease>();
  for (const identity of identities) {
    for (const lease of await selectLeases(deps, {
      task: selector.task,
      grant: selector.grant,
      identity,
      settled: selector.settled,
    }))
      found.set(lease.id, lease);
  }
  return [...found.values()].filter((lease) => !selector.provider || lease.provider === selector.provider);
}

/**
 * Where admin routes live. The app authenticates these paths as admin routes (a break-glass token is
 * accepted here and nowhere else), and refuses to start if a route under them does not begin with
 * `requireAdmin` (which authorizes and audits the call).
 */
export const ADMIN_PATHS = ['/v1/leases', '/v1/audit'] as const;

/** What the audit records of a revocation request: the selector and its options, never a secret. */
const REVOKE_INPUT = ['selector', 'reason', 'dryRun', 'force'] as const;
const RETRY_INPUT = ['reason'] as const;

/** How many leases are in each state (states with none left out), for an at-a-glance summary. */
function countByState(leases: readonly Lease[]): Partial<Record<LeaseState, number>> {
  const counts: Partial<Record<LeaseState, number>> = {};
  for (const state of LEASE_STATES) {
    const count = leases.filter((lease) => lease.state === state).length;
    if (count > 0) counts[state] = count;
  }
  return counts;
}

export function adminRoutes(deps: BrokerDeps): Router {
  const router = Router();
  const actorOf = (res: Parameters<typeof callerOf>[0]) => `${callerOf(res).issuer}/${callerOf(res).subject}`;

  router.get('/v1/leases', requireAdmin(deps, 'view'), async (req, res) => {
    const query = listQuery.parse(req.query);
    // Without another filter, `state=revoked|expired` reads the settled index: the unsettled one holds none.
    const settled = query.state !== undefined && TERMINAL_LEASE_STATES.has(query.state);
    const leases = (await findLeases(deps, { ...query, settled }))
      .filter((lease) => !query.state || lease.state === query.state)
      .sort((a, b) => a.createdAtMs - b.createdAtMs);
    res.json({
      leases: leases.slice(0, query.limit).map(leaseView),
      total: leases.length,
      countsByState: countByState(leases),
    });
  });

  router.post(
    '/v1/leases/revoke',
    requireAdmin(deps, 'revoke', { auditBody: REVOKE_INPUT }),
    async (req, res) => {
      const body = bulkBody.parse(req.body);
      const leases = await findLeases(deps, body.selector);
      const { leaseIds: _ids, ...summary } = await startRevocation(deps, leases, body.reason, actorOf(res), {
        dryRun: body.dryRun,
        force: body.force,
      });
      res.json({ ...summary, dryRun: body.dryRun, force: body.force });
    },
  );

  router.get('/v1/leases/revocations/:revocationId', requireAdmin(deps, 'view'), async (req, res) => {
    z.strictObject({}).parse(req.query);
    res.json(await revocationProgress(deps, id.parse(req.params.revocationId)));
  });

  const revokeOne = requireAdmin(deps, 'revoke', { auditBody: REVOKE_INPUT });
  router.post('/v1/leases/:leaseId/revoke', revokeOne, async (req, res) => {
    const leaseId = id.parse(req.params.leaseId);
    const body = z.strictObject({ reason, force }).parse(req.body);
    const lease = await deps.leases.get(leaseId);
    if (!lease) throw new BrokerError('not_found', 'no such lease');
    if (isSettled(lease.state)) throw new BrokerError('lease_not_active', `the lease is ${lease.state}`);
    const summary = await startRevocation(deps, [lease], body.reason, actorOf(res), { force: body.force });
    if (summary.revoked === 0 && lease.state !== 'revoking')
      throw new BrokerError('lease_not_active', 'the lease settled meanwhile');
    res.status(202).json({ leaseId, state: 'revoking', revocationId: summary.revocationId });
  });

  router.post(
    '/v1/leases/retry',
    requireAdmin(deps, 'revoke', { auditBody: RETRY_INPUT }),
    async (req, res) => {
      const body = retryBody.parse(req.body ?? {});
      const leases = await deps.leases.getMany(await deps.leases.irrevocableIds());
      const { retried } = await retryIrrevocable(deps, leases, actorOf(res), body.reason);
      res.status(202).json({ matched: leases.length, retried: retried.length });
    },
  );

  router.post(
    '/v1/leases/:leaseId/retry',
    requireAdmin(deps, 'revoke', { auditBody: RETRY_INPUT }),
    async (req, res) => {
      const leaseId = id.parse(req.params.leaseId);
      const body = retryBody.parse(req.body ?? {});
      const lease = await deps.leases.get(leaseId);
      if (!lease) throw new BrokerError('not_found', 'no such lease');
      const { refused } = await retryIrrevocable(deps, [lease], actorOf(res), body.reason);
      const state = refused[0]?.state;
      if (state === 'missing') throw new BrokerError('not_found', 'no such lease');
      if (state) throw new BrokerError('lease_not_irrevocable', `the lease is ${state}, not irrevocable`);
      res.status(202).json({ leaseId, state: 'irrevocable' });
    },
  );

  router.get('/v1/audit', requireAdmin(deps, 'view'), async (req, res) => {
    const query = auditQuery.parse(req.query);
    const events = await deps.audit.query({
      task: query.task,
      lease: query.lease,
      subject: query.identity,
      issuer: query.issuer,
      limit: query.limit,
    });
    res.json({ events });
  });

  return router;
}
