import { Router } from 'express';
import { z } from 'zod';
import { BrokerError } from '../../domain/errors';
import { RECORD_STATUSES } from '../../entitlements/records';
import { SUBJECT_PATTERN } from '../../entitlements/subject-pattern';
import type { BrokerDeps } from '../../usecases/deps';
import { recertifyEntitlement, revokeRecord } from '../../usecases/manage-entitlements';
import { proposeEnrolment, proposeEntitlement, type Validity } from '../../usecases/propose-entitlement';
import { describeEnrolments, describeEntitlements } from '../../usecases/read-entitlements';
import { requireAdmin } from '../admin-gate';
import { identityOf } from '../authenticate';
import { enrolmentView, entitlementView } from '../entitlement-views';
import { callerText } from '../text';

/**
 * Where enrolments and entitlements live: like approvals, identity tokens only (each one is a named
 * person's proposal, decision or revocation), and every route starts with an admin gate.
 */
export const ENTITLEMENT_PATHS = ['/v1/enrolments', '/v1/entitlements'] as const;

const DAY_MS = 86_400_000;
const recordId = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'a record id');
const text = callerText;
const validity = {
  expiresAt: z.iso.datetime({ offset: true }).optional(),
  validDays: z.number().int().min(1).max(730).optional(),
};
const enrolmentBody = z.strictObject({
  issuer: text(64),
  subjectPattern: z.string().regex(SUBJECT_PATTERN, "printable characters, '*' for any run of them"),
  owner: text(128),
  purpose: text(500),
  ...validity,
});
const entitlementBody = z.strictObject({
  enrolmentId: recordId,
  grant: text(64),
  owner: text(128),
  purpose: text(500),
  ...validity,
});
const revokeBody = z.strictObject({ reason: text(500) });
const recertifyBody = z.strictObject({ reason: text(500), ...validity });
const status = z.enum([...RECORD_STATUSES, 'all']).default('all');
const limit = z.coerce.number().int().min(1).max(1000).default(100);
const enrolmentQuery = z.strictObject({
  issuer: z.string().optional(),
  owner: z.string().optional(),
  status,
  limit,
});
const entitlementQuery = z.strictObject({
  grant: z.string().optional(),
  owner: z.string().optional(),
  enrolment: z.string().optional(),
  status,
  /** `due=true`: active entitlements expiring within `entitlements.dueWithinDays`; `dueWithinDays` sets it. */
  due: z.enum(['true', 'false']).optional(),
  dueWithinDays: z.coerce.number().int().min(0).max(365).optional(),
  limit,
});

/** `expiresAt` or `validDays` (not both); neither means the longest allowed. */
function validityOf(body: { expiresAt?: string; validDays?: number }, maxValidityDays: number): Validity {
  if (body.expiresAt && body.validDays)
    throw new BrokerError('invalid_request', 'give expiresAt or validDays, not both');
  if (body.expiresAt) return { expiresAtMs: Date.parse(body.expiresAt) };
  return { validDays: body.validDays ?? maxValidityDays };
}

export function entitlementRoutes(deps: BrokerDeps): Router {
  const router = Router();
  const maxDays = () => deps.config.entitlements.maxValidityDays;
  const proposalAudit = [
    'issuer',
    'subjectPattern',
    'enrolmentId',
    'grant',
    'owner',
    'purpose',
    'expiresAt',
    'validDays',
  ];
  const describeEnrolment = async (id: string, nowMs: number) => {
    const found = await deps.entitlements.getEnrolment(id);
    if (!found) throw new BrokerError('not_found', 'no such enrolment');
    return enrolmentView((await describeEnrolments(deps, [found], nowMs))[0]!, nowMs);
  };
  const describeEntitlement = async (id: string, nowMs: number) => {
    const found = await deps.entitlements.getEntitlement(id);
    if (!found) throw new BrokerError('not_found', 'no such entitlement');
    return entitlementView((await describeEntitlements(deps, [found], nowMs))[0]!, nowMs);
  };

  router.post(
    '/v1/enrolments',
    requireAdmin(deps, 'approve', { auditBody: proposalAudit }),
    async (req, res) => {
      const body = enrolmentBody.parse(req.body);
      const { enrolment } = await proposeEnrolment(deps, identityOf(res), {
        ...body,
        validity: validityOf(body, maxDays()),
      });
      res.status(201).location(`/v1/enrolments/${enrolment.id}`);
      res.json(await describeEnrolment(enrolment.id, deps.nowMs()));
    },
  );

  router.get('/v1/enrolments', requireAdmin(deps, 'view'), async (req, res) => {
    const query = enrolmentQuery.parse(req.query);
    const nowMs = deps.nowMs();
    const described = await describeEnrolments(deps, await deps.entitlements.listEnrolments(), nowMs);
    const matching = described.filter(
      ({ enrolment, status: current }) =>
        (!query.issuer || enrolment.issuer === query.issuer) &&
        (!query.owner || enrolment.owner === query.owner) &&
        (query.status === 'all' || current === query.status),
    );
    res.json({
      enrolments: matching.slice(0, query.limit).map((one) => enrolmentView(one, nowMs)),
      total: matching.length,
    });
  });

  router.get('/v1/enrolments/:enrolmentId', requireAdmin(deps, 'view'), async (req, res) => {
    res.json(await describeEnrolment(recordId.parse(req.params.enrolmentId), deps.nowMs()));
  });

  router.post(
    '/v1/entitlements',
    requireAdmin(deps, 'approve', { auditBody: proposalAudit }),
    async (req, res) => {
      const body = entitlementBody.parse(req.body);
      const { entitlement } = await proposeEntitlement(deps, identityOf(res), {
        ...body,
        validity: validityOf(body, maxDays()),
      });
      res.status(201).location(`/v1/entitlements/${entitlement.id}`);
      res.json(await describeEntitlement(entitlement.id, deps.nowMs()));
    },
  );

  router.get('/v1/entitlements', requireAdmin(deps, 'view'), async (req, res) => {
    const query = entitlementQuery.parse(req.query);
    const nowMs = deps.nowMs();
    const dueDays =
      query.dueWithinDays ?? (query.due === 'true' ? deps.config.entitlements.dueWithinDays : null);
    const dueBeforeMs = dueDays === null ? undefined : nowMs + dueDays * DAY_MS;
    // Soonest expiry first: the order an owner recertifies in.
    const listed = await deps.entitlements.listEntitlements(dueBeforeMs);
    const described = await describeEntitlements(deps, listed, nowMs);
    const wanted = dueBeforeMs === undefined ? query.status : 'active';
    const matching = described.filter(
      ({ entitlement, status: current }) =>
        (!query.grant || entitlement.grant === query.grant) &&
        (!query.owner || entitlement.owner === query.owner) &&
        (!query.enrolment || entitlement.enrolmentId === query.enrolment) &&
        (wanted === 'all' || current === wanted),
    );
    res.json({
      entitlements: matching.slice(0, query.limit).map((one) => entitlementView(one, nowMs)),
      total: matching.length,
      ...(dueBeforeMs === undefined ? {} : { dueBefore: new Date(dueBeforeMs).toISOString() }),
    });
  });

  router.get('/v1/entitlements/:entitlementId', requireAdmin(deps, 'view'), async (req, res) => {
    res.json(await describeEntitlement(recordId.parse(req.params.entitlementId), deps.nowMs()));
  });

  for (const kind of ['enrolment', 'entitlement'] as const) {
    router.post(
      `/v1/${kind}s/:${kind}Id/revoke`,
      requireAdmin(deps, 'revoke', { auditBody: ['reason'] }),
      async (req, res) => {
        const id = recordId.parse(req.params[`${kind}Id`]);
        const { reason } = revokeBody.parse(req.body);
        await revokeRecord(deps, identityOf(res), kind, id, reason);
        const nowMs = deps.nowMs();
        res.json(
          kind === 'enrolment' ? await describeEnrolment(id, nowMs) : await describeEntitlement(id, nowMs),
        );
      },
    );
  }

  router.post(
    '/v1/entitlements/:entitlementId/recertify',
    requireAdmin(deps, 'approve', { auditBody: ['reason', 'expiresAt', 'validDays'] }),
    async (req, res) => {
      const id = recordId.parse(req.params.entitlementId);
      const body = recertifyBody.parse(req.body);
      await recertifyEntitlement(deps, identityOf(res), id, {
        reason: body.reason,
        validity: validityOf(body, maxDays()),
      });
      res.json(await describeEntitlement(id, deps.nowMs()));
    },
  );

  return router;
}
