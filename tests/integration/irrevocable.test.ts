import { startFlakyBroker, type FlakyBroker } from '../support/flaky-backend';
import { waitFor } from '../support/broker';

/**
 * A backend that refuses revocations: the worker retries with backoff, then marks the lease irrevocable
 * (listed, counted, audited); when the backend recovers, the sweeper's periodic retry settles it.
 */
describe('a revocation that keeps failing', () => {
  let flaky: FlakyBroker;
  let broker: FlakyBroker['broker'];
  let alerts: any[];
  const backend = () => flaky.backend;

  beforeAll(async () => {
    flaky = await startFlakyBroker({
      revocation: { attempts: 3, backoffMs: 50, irrevocableRetrySeconds: 1, sweepIntervalMs: 200 },
    });
    flaky.backend.down = true;
    broker = flaky.broker;
    alerts = flaky.alerts;
  });
  afterAll(() => flaky.close());

  it('becomes irrevocable after the last attempt, is listed and counted, and settles once the backend is back', async () => {
    const agent = await broker.agents.sign({ sub: 'flaky' });
    const admin = await broker.admins.sign({ sub: 'oncall@example.com' });
    const task = await broker.call('POST', '/v1/tasks', agent, { purpose: 'flaky backend', ticket: 'OPS-8' });
    const issued = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
      grant: 'artifacts-read',
      ttlSeconds: 1,
    });
    // A second lease failing at the same moment: the debounced alert carries both, in one POST.
    const second = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
      grant: 'artifacts-read',
      ttlSeconds: 1,
    });

    const listed = await waitFor(async () => {
      const response = await broker.call('GET', '/v1/leases?state=irrevocable', admin);
      const leases = response.body.leases as Array<{ leaseId: string; lastError?: string }>;
      const ids = leases.map((l) => l.leaseId);
      return ids.includes(second.body.leaseId) ? leases.find((l) => l.leaseId === issued.body.leaseId) : null;
    }, 10_000);
    expect(backend().calls.length).toBeGreaterThanOrEqual(3);
    expect(listed.lastError).toBe('backend unavailable (503)');
    const metrics = (await broker.call('GET', '/metrics', null)).body as string;
    expect(metrics).toMatch(/^tasklease_irrevocable_leases 2$/m);
    // At least the two (the sweeper may already have retried them, failing again).
    expect(metrics).toMatch(/tasklease_revocation_failures_total\{provider="jwt",final="true"\} [2-9]/);
    const alert = await waitFor(async () => alerts[0], 10_000);
    expect(alert).toMatchObject({
      event: 'tasklease.leases.irrevocable',
      broker: 'tasklease-test',
      count: 2,
    });
    expect(alert.leases.map((l: any) => l.leaseId).sort()).toEqual(
      [issued.body.leaseId, second.body.leaseId].sort(),
    );
    expect(alert.leases[0]).toMatchObject({
      grant: 'artifacts-read',
      provider: 'jwt',
      reason: 'backend unavailable (503)',
    });
    const audit = await broker.call('GET', `/v1/audit?lease=${issued.body.leaseId}`, admin);
    expect(audit.body.events.map((e: { type: string }) => e.type)).toEqual(
      expect.arrayContaining(['credential.issued', 'lease.revoke_failed', 'lease.irrevocable']),
    );
    // The sweeper retries both and fails again (final failures 2 → 4 or more): that must not page again,
    // even after a whole debounce window.
    await waitFor(async () => {
      const text = (await broker.call('GET', '/metrics', null)).body as string;
      const final = /tasklease_revocation_failures_total\{provider="jwt",final="true"\} (\d+)/.exec(text);
      return Number(final?.[1]) >= 4;
    }, 15_000);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(alerts).toHaveLength(1);

    backend().down = false;
    const settled = await waitFor(async () => {
      const lease = await broker.context.deps.leases.get(issued.body.leaseId);
      return lease?.state === 'expired' ? lease : null;
    }, 10_000);
    // Settled by a retry after the backend came back: it expired, nobody asked to revoke it early.
    expect(settled?.revocation).toBe('expired-at-source');
    // The other irrevocable lease is retried by the sweeper on its own schedule: wait for it too.
    await waitFor(async () => (await broker.context.deps.leases.countIrrevocable()) === 0, 10_000);
    // The sweeper's retries while the backend was still down did not page again.
    expect(alerts).toHaveLength(1);
    expect(await broker.context.deps.leases.countUnsettled()).toBe(0);
  }, 30_000);

  it('force closes a lease the backend cannot revoke, stating the residual risk, and never calls it revoked', async () => {
    backend().down = true;
    const agent = await broker.agents.sign({ sub: 'rogue-agent' });
    const admin = await broker.admins.sign({ sub: 'oncall@example.com' });
    const task = await broker.call('POST', '/v1/tasks', agent, { purpose: 'went rogue', ticket: 'OPS-9' });
    const stuck = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
      grant: 'artifacts-read',
      ttlSeconds: 300,
    });
    const forced = await broker.call('POST', `/v1/leases/${stuck.body.leaseId}/revoke`, admin, {
      reason: 'agent went rogue (INC-7)',
      force: true,
    });
    expect(forced.status).toBe(202);
    const closed = await waitFor(async () => {
      const lease = await broker.context.deps.leases.get(stuck.body.leaseId);
      return lease?.state === 'force-closed' ? lease : null;
    }, 10_000);
    expect(closed).toMatchObject({ revocation: 'force-closed', revokeReason: 'agent went rogue (INC-7)' });
    expect(closed?.revocationDetail).toBe(
      'closed by force although revocation failed (backend unavailable (503)); the credential may still be ' +
        `valid at its source until ${stuck.body.expiresAt}`,
    );
    const listed = await broker.call('GET', '/v1/leases?state=force-closed', admin);
    expect(listed.body.leases.map((l: { leaseId: string }) => l.leaseId)).toContain(stuck.body.leaseId);
    const audit = await broker.call('GET', `/v1/audit?lease=${stuck.body.leaseId}`, admin);
    const types = audit.body.events.map((e: { type: string }) => e.type);
    expect(types).toContain('lease.force_closed');
    expect(types).not.toContain('lease.settled');
    expect(audit.body.events.find((e: any) => e.type === 'lease.revoke_requested').detail).toEqual({
      force: true,
    });

    // With the backend healthy, force changes nothing: the revocation is real and recorded as such.
    backend().down = false;
    const healthy = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
      grant: 'artifacts-read',
      ttlSeconds: 300,
    });
    const bulk = await broker.call('POST', '/v1/leases/revoke', admin, {
      selector: { task: task.body.taskId },
      reason: 'agent went rogue (INC-7)',
      force: true,
    });
    expect(bulk.body).toMatchObject({ matched: 1, revoked: 1, force: true });
    const revoked = await waitFor(async () => {
      const lease = await broker.context.deps.leases.get(healthy.body.leaseId);
      return lease?.state === 'revoked' ? lease : null;
    }, 10_000);
    expect(revoked?.revocation).toBe('jwt-denylisted');
  }, 30_000);
});
