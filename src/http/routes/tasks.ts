import { Router } from 'express';
import { z } from 'zod';
import type { BrokerDeps } from '../../usecases/deps';
import { completeTask } from '../../usecases/complete-task';
import { declareTask } from '../../usecases/declare-task';
import { issueCredential } from '../../usecases/issue-credential';
import { loadOwnTask } from '../../usecases/load-own-task';
import { revokeUnreturned } from '../../usecases/request-revocation';
import { identityOf } from '../authenticate';
import { watchCallerGone } from '../caller-gone';
import { callerText } from '../text';
import { taskView } from '../views';

const text = callerText;
const grantName = z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'a grant name');
const ttlSeconds = z
  .number()
  .int()
  .positive()
  .max(7 * 86400);

const declareBody = z.strictObject({
  purpose: text(500),
  ticket: text(128).optional(),
  ref: text(256).optional(),
  grants: z.array(grantName).max(50).optional(),
  ttlSeconds: ttlSeconds.optional(),
});
const credentialBody = z.strictObject({
  grant: grantName,
  ttlSeconds: ttlSeconds.optional(),
  reason: text(500).optional(),
  approvalId: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,64}$/, 'an approval id')
    .optional(),
});
const completeBody = z.strictObject({
  outcome: z.enum(['succeeded', 'failed', 'cancelled']),
  summary: text(2000).optional(),
});
const taskParams = z.object({ taskId: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'a task id') });

/** Workload calls: every route here runs behind `authenticate`; a task is its declarer's alone. */
export function taskRoutes(deps: BrokerDeps): Router {
  const router = Router();

  router.post('/v1/tasks', async (req, res) => {
    res.status(201).json(await declareTask(deps, identityOf(res), declareBody.parse(req.body)));
  });

  router.post('/v1/tasks/:taskId/credentials', async (req, res) => {
    const { taskId } = taskParams.parse(req.params);
    // A caller that hangs up while its credential is minted never receives it: nobody holds it, so it
    // is revoked at once rather than left alive until its expiry.
    const callerGone = watchCallerGone(res);
    const result = await issueCredential(deps, identityOf(res), taskId, credentialBody.parse(req.body));
    if (callerGone() && !('pending' in result)) {
      await revokeUnreturned(deps, result.leaseId);
      return;
    }
    if ('pending' in result) {
      // 202: a human must approve first. The agent polls the approval, then repeats this call with its id.
      res.status(202).location(`/v1/approvals/${result.pending.approvalId}`).json(result.pending);
      return;
    }
    res.status(201).json(result);
  });

  router.post('/v1/tasks/:taskId/complete', async (req, res) => {
    const { taskId } = taskParams.parse(req.params);
    const result = await completeTask(deps, identityOf(res), taskId, completeBody.parse(req.body));
    res.status(200).json(result);
  });

  router.get('/v1/tasks/:taskId', async (req, res) => {
    const { taskId } = taskParams.parse(req.params);
    const task = await loadOwnTask(deps, identityOf(res), taskId, deps.nowMs());
    const leases = await deps.leases.getMany(await deps.tasks.leaseIds(taskId));
    res.json(
      taskView(
        task,
        leases.sort((a, b) => a.createdAtMs - b.createdAtMs),
      ),
    );
  });

  return router;
}
