import { Router, type Request, type Response } from 'express';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { APPROVAL_KINDS, APPROVAL_STATUSES, effectiveStatus, type Approval } from '../../approvals/approval';
import { BrokerError } from '../../domain/errors';
import type { BrokerDeps } from '../../usecases/deps';
import { decideApproval } from '../../usecases/decide-approval';
import { loadOwnTask } from '../../usecases/load-own-task';
import { requireAdmin, requireAdminUnlessOwner } from '../admin-gate';
import { identityOf } from '../authenticate';
import { approvalView } from '../views';
import { callerText } from '../text';

/**
 * Where approval routes live: authenticated by identity token only (a break-glass token is refused here —
 * a step-up approval is one named person's decision), and every route starts with an admin gate.
 */
export const APPROVAL_PATHS = ['/v1/approvals'] as const;

const approvalId = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'an approval id');
const listQuery = z.strictObject({
  status: z.enum([...APPROVAL_STATUSES, 'all']).default('pending'),
  kind: z.enum(APPROVAL_KINDS).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});
/** Long-poll: hold the answer while the approval is pending, up to this long (proxies cut idle calls at 60 s). */
const getQuery = z.strictObject({ waitSeconds: z.coerce.number().int().min(0).max(55).default(0) });
const decisionBody = z.strictObject({ reason: callerText(500) });
const POLL_MS = 250;

async function viewWithTask(deps: BrokerDeps, approval: Approval, nowMs: number) {
  const task = approval.taskId ? await deps.tasks.get(approval.taskId, nowMs) : null;
  return approvalView(approval, nowMs, task);
}

/** Re-reads a pending approval until it is decided or expires, the wait is over, or the caller hangs up. */
async function waitWhilePending(deps: BrokerDeps, approval: Approval, res: Response, waitSeconds: number) {
  const deadlineMs = deps.nowMs() + waitSeconds * 1000;
  let current = approval;
  const gone = new AbortController();
  // The response closing before it was sent is the caller hanging up (a request's own `close` only says its
  // body was read): stop polling Redis for nobody.
  res.once('close', () => gone.abort());
  while (effectiveStatus(current, deps.nowMs()) === 'pending' && deps.nowMs() < deadlineMs) {
    const aborted = await sleep(Math.min(POLL_MS, deadlineMs - deps.nowMs()), false, {
      signal: gone.signal,
    }).catch(() => true);
    if (aborted) break;
    current = (await deps.approvals.get(approval.id)) ?? current;
  }
  return current;
}

export function approvalRoutes(deps: BrokerDeps): Router {
  const router = Router();
  const decisionGate = requireAdmin(deps, 'approve', { auditBody: ['reason'] });

  /** The workload whose task asked may read its own step-up approval, without an admin role. */
  const isRequester = async (req: Request, res: Response) => {
    const approval = await deps.approvals.get(approvalId.parse(req.params.approvalId));
    if (approval?.kind !== 'step-up' || !approval.taskId) return false;
    await loadOwnTask(deps, identityOf(res), approval.taskId, deps.nowMs());
    return true;
  };

  router.get('/v1/approvals', requireAdmin(deps, 'view'), async (req, res) => {
    const query = listQuery.parse(req.query);
    const nowMs = deps.nowMs();
    const matching = (await deps.approvals.newest()).filter(
      (approval) =>
        (query.status === 'all' || effectiveStatus(approval, nowMs) === query.status) &&
        (!query.kind || approval.kind === query.kind),
    );
    const shown = matching.slice(0, query.limit);
    res.json({
      approvals: await Promise.all(shown.map((approval) => viewWithTask(deps, approval, nowMs))),
      total: matching.length,
    });
  });

  router.get(
    '/v1/approvals/:approvalId',
    requireAdminUnlessOwner(deps, 'view', isRequester),
    async (req, res) => {
      const { waitSeconds } = getQuery.parse(req.query);
      const found = await deps.approvals.get(approvalId.parse(req.params.approvalId));
      if (!found) throw new BrokerError('not_found', 'no such approval');
      const approval = waitSeconds > 0 ? await waitWhilePending(deps, found, res, waitSeconds) : found;
      res.set('Cache-Control', 'no-store');
      res.json(await viewWithTask(deps, approval, deps.nowMs()));
    },
  );

  for (const [action, status] of [
    ['approve', 'approved'],
    ['deny', 'denied'],
  ] as const) {
    router.post(`/v1/approvals/:approvalId/${action}`, decisionGate, async (req, res) => {
      const id = approvalId.parse(req.params.approvalId);
      const { reason } = decisionBody.parse(req.body);
      const decided = await decideApproval(deps, identityOf(res), id, { status, reason });
      res.json(await viewWithTask(deps, decided, deps.nowMs()));
    });
  }

  return router;
}
