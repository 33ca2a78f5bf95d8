import { revokeJobId } from '../../src/leases/revocation-queue';
import { waitFor } from '../support/broker';
import { BACKEND_DOWN, startFlakyBroker, type FlakyBroker } from '../support/flaky-backend';

/**
 * On-call's "retry now" for irrevocable leases, and force asked while a job is trying a failing backend.
 * One attempt per job and an hour between the sweeper's retries: a lease that settles here was settled by
 * what the test did, not by the sweeper's schedule.
 */
describe('retrying an irrevocable lease', () => {
  let flaky: FlakyBroker;
  let admin: string;
  let viewer: string;
  let agent: string;
  let taskId: string;

  beforeAll(async () => {
    flaky = await startFlakyBroker({
      revocation: { attempts: 1, backoffMs: 50, irrevocableRetrySeconds: 3600, sweepIntervalMs: 200 },
    });
    admin = await flaky.broker.admins.sign({ sub: 'oncall@example.com' });
    viewer = await flaky.broker.admins.sign({ sub: 'viewer@example.com' });
    agent = await flaky.broker.agents.sign({ sub: 'retry-agent' });
    const task = await flaky.broker.call('POST', '/v1/tasks', agent, { purpose: 'retry', ticket: 'OPS-12' });
    taskId = task.body.taskId;
  });
  afterAll(() => flaky.close());
  beforeEach(() => {
    flaky.backend.down = false;
  });

  const issue = async (): Promise<string> => {
    const issued = await flaky.broker.call('POST', `/v1/tasks/${taskId}/credentials`, agent, {
      grant: 'artifacts-read',
      ttlSeconds: 300,
    });
    expect(issued.status).toBe(201);
    return issued.body.leaseId;
  };
  const lease = (leaseId: string) => flaky.broker.context.deps.leases.get(leaseId);
  /** Revoked by an admin while the backend is down: it becomes irrevocable. */
  const irrevocable = async (reason: string): Promise<string> => {
    flaky.backend.down = true;
    const leaseId = await issue();
    const revoked = await flaky.broker.call('POST', `/v1/leases/${leaseId}/revoke`, admin, { reason });
    expect(revoked.status).toBe(202);
    await waitFor(async () => (await lease(leaseId))?.state === 'irrevocable', 10_000);
    return leaseId;
  };
  /** Waits for the lease to settle (revoked, expired or force-closed) and returns it. */
  const settled = (leaseId: string) =>
    waitFor(async () => {
      const now = await lease(leaseId);
      return now && ['revoked', 'expired', 'force-closed'].includes(now.state) ? now : null;
    }, 10_000);
  const auditOf = async (leaseId: string) =>
    (await flaky.broker.call('GET', `/v1/audit?lease=${leaseId}`, admin)).body.events as any[];

  it('after the alert and the backend recovering, a retry settles the lease as revoked, for its original reason', async () => {
    const leaseId = await irrevocable('INC-12: leaked in a log');
    const alert = await waitFor(
      async () => flaky.alerts.find((a) => a.leases.some((l: any) => l.leaseId === leaseId)),
      10_000,
    );
    expect(alert.leases[0]).toMatchObject({ leaseId, reason: BACKEND_DOWN });

    flaky.backend.down = false;
    // No body at all: a retry needs no reason.
    const retried = await flaky.broker.call('POST', `/v1/leases/${leaseId}/retry`, admin);
    expect(retried).toEqual({ status: 202, body: { leaseId, state: 'irrevocable' } });

    expect(await settled(leaseId)).toMatchObject({
      state: 'revoked',
      revocation: 'jwt-denylisted',
      revokeReason: 'INC-12: leaked in a log',
    });
    const listed = await flaky.broker.call('GET', '/v1/leases?state=irrevocable', admin);
    expect(listed.body.leases.map((l: { leaseId: string }) => l.leaseId)).not.toContain(leaseId);
    const events = await auditOf(leaseId);
    expect(events.map((e) => e.type)).toEqual([
      'credential.issued',
      'lease.revoke_requested',
      'lease.irrevocable',
      'lease.retry_requested',
      'lease.settled',
    ]);
    const retry = events.find((e) => e.type === 'lease.retry_requested');
    expect(retry).toMatchObject({ actor: 'corp/oncall@example.com', detail: { lastError: BACKEND_DOWN } });
    expect(retry.reason).toBeUndefined();
    expect(events.at(-1)).toMatchObject({ reason: 'INC-12: leaked in a log', detail: { state: 'revoked' } });
  });

  it('a retry while the backend is still down leaves the lease irrevocable, one failure more', async () => {
    const leaseId = await irrevocable('INC-13');
    const before = (await lease(leaseId))!.attempts;
    const retried = await flaky.broker.call('POST', `/v1/leases/${leaseId}/retry`, admin, {
      reason: 'is the backend back?',
    });
    expect(retried.status).toBe(202);
    const after = await waitFor(async () => {
      const now = await lease(leaseId);
      return now && now.attempts > before ? now : null;
    }, 10_000);
    const events = await waitFor(async () => {
      const all = await auditOf(leaseId);
      return all.filter((e) => e.type === 'lease.irrevocable').length === 2 ? all : null;
    }, 10_000);
    expect((await lease(leaseId))?.state).toBe('irrevocable');
    expect(after).toMatchObject({ lastError: BACKEND_DOWN, revokeReason: 'INC-13' });
    expect(events.find((e) => e.type === 'lease.retry_requested').reason).toBe('is the backend back?');
  });

  it('runs again even when an old failed job still holds the lease’s job id', async () => {
    const leaseId = await irrevocable('INC-14');
    // A failed job kept under the revoke id (as another configuration of the queue would keep it): adding
    // a job with that id again would be a no-op.
    const { queue } = flaky.broker.context.deps.queue;
    await queue.add('revoke', { leaseId }, { jobId: revokeJobId(leaseId), removeOnFail: false });
    await waitFor(async () => (await queue.getJob(revokeJobId(leaseId)))?.isFailed(), 10_000);

    flaky.backend.down = false;
    const retried = await flaky.broker.call('POST', `/v1/leases/${leaseId}/retry`, admin, {
      reason: 'backend restored',
    });
    expect(retried.status).toBe(202);
    expect(await settled(leaseId)).toMatchObject({ state: 'revoked', revokeReason: 'INC-14' });
  });

  it('answers 409 lease_not_irrevocable to an active or a revoked lease, and leaves it as it was', async () => {
    const active = await issue();
    const refused = await flaky.broker.call('POST', `/v1/leases/${active}/retry`, admin, {});
    expect(refused.status).toBe(409);
    expect(refused.body).toEqual({
      error: 'lease_not_irrevocable',
      message: 'the lease is active, not irrevocable',
    });
    expect((await lease(active))?.state).toBe('active');
    await flaky.broker.call('POST', `/v1/leases/${active}/revoke`, admin, { reason: 'done with it' });
    await settled(active);
    const again = await flaky.broker.call('POST', `/v1/leases/${active}/retry`, admin, {});
    expect(again.status).toBe(409);
    expect(again.body.error).toBe('lease_not_irrevocable');
    expect((await auditOf(active)).map((e) => e.type)).not.toContain('lease.retry_requested');
  });

  it('answers 404 to an unknown lease, 403 to a viewer, 400 to a bad body', async () => {
    const unknown = await flaky.broker.call('POST', `/v1/leases/${'0'.repeat(32)}/retry`, admin, {});
    expect(unknown).toMatchObject({ status: 404, body: { error: 'not_found' } });
    const leaseId = await irrevocable('INC-15');
    const byViewer = await flaky.broker.call('POST', `/v1/leases/${leaseId}/retry`, viewer, {});
    expect(byViewer).toMatchObject({ status: 403, body: { error: 'forbidden' } });
    for (const body of [{ force: true }, { reason: 'x'.repeat(501) }, { reason: 7 }]) {
      const bad = await flaky.broker.call('POST', `/v1/leases/${leaseId}/retry`, admin, body);
      expect(bad).toMatchObject({ status: 400, body: { error: 'invalid_request' } });
    }
    expect((await auditOf(leaseId)).map((e) => e.type)).not.toContain('lease.retry_requested');
  });
});

describe('force asked while a job is trying a failing backend', () => {
  let flaky: FlakyBroker;
  beforeAll(async () => {
    // One attempt: the attempt under way when force arrives is the last one.
    flaky = await startFlakyBroker({
      revocation: { attempts: 1, backoffMs: 50, irrevocableRetrySeconds: 3600, sweepIntervalMs: 200 },
    });
  });
  afterAll(() => flaky.close());

  it('closes the lease as force-closed when that attempt fails: never irrevocable, never revoked', async () => {
    const { broker, backend } = flaky;
    const admin = await broker.admins.sign({ sub: 'oncall@example.com' });
    const agent = await broker.agents.sign({ sub: 'mid-job' });
    const task = await broker.call('POST', '/v1/tasks', agent, {
      purpose: 'mid-job force',
      ticket: 'OPS-16',
    });
    const issued = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
      grant: 'artifacts-read',
      ttlSeconds: 300,
    });
    const leaseId = issued.body.leaseId as string;
    backend.down = true;
    const held = backend.hold(leaseId);
    await broker.call('POST', `/v1/leases/${leaseId}/revoke`, admin, { reason: 'INC-16: leaked' });
    await held.entered;

    const forced = await broker.call('POST', `/v1/leases/${leaseId}/revoke`, admin, {
      reason: 'INC-16: close it whatever happens',
      force: true,
    });
    expect(forced).toEqual({
      status: 202,
      body: { leaseId, state: 'revoking', revocationId: expect.stringMatching(/^[0-9a-f]{32}$/) },
    });
    held.release();

    const ended = await waitFor(async () => {
      const now = await broker.context.deps.leases.get(leaseId);
      return now && ['irrevocable', 'revoked', 'expired', 'force-closed'].includes(now.state) ? now : null;
    }, 10_000);
    expect(ended).toMatchObject({
      state: 'force-closed',
      revocation: 'force-closed',
      revokeReason: 'INC-16: leaked',
    });
    expect(ended.revocationDetail).toContain(BACKEND_DOWN);
    expect(backend.calls.filter((id) => id === leaseId)).toHaveLength(1);
    const events = (await broker.call('GET', `/v1/audit?lease=${leaseId}`, admin)).body.events as any[];
    expect(events.map((e) => e.type)).toEqual([
      'credential.issued',
      'lease.revoke_requested',
      'lease.revoke_requested',
      'lease.force_closed',
    ]);
    expect(events[2]).toMatchObject({ actor: 'corp/oncall@example.com', detail: { force: true } });
  });
});
