import { waitFor } from '../support/broker';
import { startFlakyBroker, type FlakyBroker } from '../support/flaky-backend';
import { runTasklease } from '../support/processes';

/**
 * `tasklease lease ls --irrevocable` and `tasklease lease retry`, the real binary against a running broker
 * whose backend fails and then recovers. One task, three leases: two irrevocable, one active.
 */
describe('CLI: tasklease lease retry', () => {
  let flaky: FlakyBroker;
  let admin: string;
  let viewer: string;
  let taskId: string;
  const leases: { first: string; second: string; active: string } = { first: '', second: '', active: '' };

  beforeAll(async () => {
    flaky = await startFlakyBroker({
      revocation: { attempts: 1, backoffMs: 50, irrevocableRetrySeconds: 3600, sweepIntervalMs: 200 },
    });
    const { broker } = flaky;
    admin = await broker.admins.sign({ sub: 'oncall@example.com' });
    viewer = await broker.admins.sign({ sub: 'viewer@example.com' });
    const agent = await broker.agents.sign({ sub: 'cli-agent' });
    taskId = (await broker.call('POST', '/v1/tasks', agent, { purpose: 'cli', ticket: 'OPS-17' })).body
      .taskId;
    const issue = async () =>
      (await broker.call('POST', `/v1/tasks/${taskId}/credentials`, agent, { grant: 'artifacts-read' })).body
        .leaseId as string;
    leases.first = await issue();
    leases.second = await issue();
    leases.active = await issue();
    flaky.backend.down = true;
    for (const leaseId of [leases.first, leases.second])
      await broker.call('POST', `/v1/leases/${leaseId}/revoke`, admin, { reason: 'INC-17' });
    await waitFor(async () => (await broker.context.deps.leases.countIrrevocable()) === 2, 10_000);
    flaky.backend.down = false;
  });
  afterAll(() => flaky.close());

  /** Runs the binary to its exit: exit code, and what it printed (stdout, then stderr). */
  const cli = async (args: string[], token = admin) => {
    const { code, stdout, stderr } = await runTasklease(args, {
      TASKLEASE_ADDR: flaky.broker.url,
      TASKLEASE_TOKEN: token,
    });
    return { code, output: stdout + stderr };
  };
  const stateOf = async (leaseId: string) => (await flaky.broker.context.deps.leases.get(leaseId))?.state;

  it('lease ls sums the leases up by state; --irrevocable shows only those', async () => {
    const all = await cli(['lease', 'ls', '--task', taskId]);
    expect(all.code).toBe(0);
    expect(all.output.trim().split('\n').at(-1)).toBe('3 leases: 1 active, 2 irrevocable');

    const stuck = await cli(['lease', 'ls', '--irrevocable']);
    expect(stuck.code).toBe(0);
    const lines = stuck.output.trim().split('\n');
    expect(lines).toHaveLength(4);
    expect(
      lines
        .slice(1, 3)
        .map((line) => line.split(/\s+/)[0])
        .sort(),
    ).toEqual([leases.first, leases.second].sort());
    expect(lines.slice(1, 3).every((line) => line.split(/\s+/)[1] === 'irrevocable')).toBe(true);
    expect(lines[3]).toBe('2 leases: 2 irrevocable');

    const json = await cli(['lease', 'ls', '--task', taskId, '--json']);
    expect(JSON.parse(json.output)).toMatchObject({
      total: 3,
      countsByState: { active: 1, irrevocable: 2 },
    });
  });

  it('refuses --irrevocable with --state, and retry without a lease or with both, as usage errors (exit 2)', async () => {
    const [conflict, neither, both] = await Promise.all([
      cli(['lease', 'ls', '--irrevocable', '--state', 'active']),
      cli(['lease', 'retry']),
      cli(['lease', 'retry', leases.first, '--all-irrevocable']),
    ]);
    expect([conflict.code, neither.code, both.code]).toEqual([2, 2, 2]);
    expect(neither.output).toContain('give a lease id or --all-irrevocable');
    expect(await stateOf(leases.first)).toBe('irrevocable');
  });

  it('exits 4 with the error code when the API refuses: a viewer, an active lease, an unknown lease', async () => {
    const [byViewer, active, unknown] = await Promise.all([
      cli(['lease', 'retry', leases.first], viewer),
      cli(['lease', 'retry', leases.active]),
      cli(['lease', 'retry', '0'.repeat(32)]),
    ]);
    expect(byViewer.code).toBe(4);
    expect(byViewer.output).toContain('forbidden');
    expect(active.code).toBe(4);
    expect(active.output).toContain('lease_not_irrevocable');
    expect(unknown.code).toBe(4);
    expect(unknown.output).toContain('not_found');
    expect(await stateOf(leases.first)).toBe('irrevocable');
  });

  it('lease retry <id> --reason retries that lease, which settles as revoked', async () => {
    const result = await cli(['lease', 'retry', leases.first, '--reason', 'backend is back']);
    expect(result.code).toBe(0);
    expect(result.output).toContain(leases.first);
    await waitFor(async () => (await stateOf(leases.first)) === 'revoked', 10_000);
    expect(await stateOf(leases.second)).toBe('irrevocable');
    const audit = await flaky.broker.call('GET', `/v1/audit?lease=${leases.first}`, admin);
    expect(audit.body.events.find((e: any) => e.type === 'lease.retry_requested')).toMatchObject({
      actor: 'corp/oncall@example.com',
      reason: 'backend is back',
    });
  });

  it('lease retry --all-irrevocable retries every irrevocable lease and says how many', async () => {
    const result = await cli(['lease', 'retry', '--all-irrevocable']);
    expect(result.code).toBe(0);
    expect(result.output.trim()).toBe('retrying 1 irrevocable lease');
    await waitFor(async () => (await stateOf(leases.second)) === 'revoked', 10_000);
    expect(await stateOf(leases.active)).toBe('active');

    const none = await cli(['lease', 'retry', '--all-irrevocable', '--json']);
    expect(none.code).toBe(0);
    expect(JSON.parse(none.output)).toEqual({ matched: 0, retried: 0 });
  });
});
