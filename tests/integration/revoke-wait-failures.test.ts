import { startRevocationWorker } from '../../src/jobs/revocation-worker';
import { connectRedis } from '../../src/redis/connection';
import type { ProviderKind } from '../../src/domain/types';
import type { CredentialProvider } from '../../src/providers/provider';
import { startTestBroker, testRedisTarget, waitFor, type TestBroker } from '../support/broker';
import { runTasklease } from '../support/processes';

const POLICIES = `
@id("declare")
permit(principal, action == Action::"declareTask", resource);
@id("issue")
permit(principal, action == Action::"issue", resource) when { principal.issuer == "agents" };
`;

/**
 * `tasklease lease revoke --wait` when revocation does not simply succeed, against the real worker with a
 * backend that refuses every `artifacts-write` revocation, and can be told to hang.
 */
describe('lease revoke --wait with a failing backend', () => {
  let broker: TestBroker;
  let admin: string;
  let agent: string;
  let stop: () => Promise<void>;
  /** While set, revocations wait for it: a backend that answers nothing. */
  let hanging: { promise: Promise<void>; release: () => void } | null = null;

  beforeAll(async () => {
    broker = await startTestBroker({
      policies: POLICIES,
      worker: false,
      revocation: { attempts: 2, backoffMs: 50 },
    });
    const { deps } = broker.context;
    const jwt = deps.providers.get('jwt') as CredentialProvider;
    const failing: CredentialProvider = {
      ...jwt,
      async revoke(lease, context) {
        if (lease.grant === 'artifacts-write') throw new Error('backend unavailable (503)');
        await hanging?.promise;
        return jwt.revoke(lease, context);
      },
    };
    const workerDeps = { ...deps, providers: new Map<ProviderKind, CredentialProvider>([['jwt', failing]]) };
    const connection = connectRedis(testRedisTarget(), { forBullWorker: true });
    const worker = startRevocationWorker(workerDeps, connection, broker.context.keys);
    stop = async () => {
      hanging?.release();
      await worker.close();
      await connection.quit();
    };
    admin = await broker.admins.sign({ sub: 'oncall@example.com' });
    agent = await broker.agents.sign({ sub: 'half-broken' });
  });
  afterAll(async () => {
    await stop();
    await broker.close();
  });

  const declareWith = async (grants: string[]) => {
    const task = await broker.call('POST', '/v1/tasks', agent, {
      purpose: 'failing backend',
      ticket: 'OPS-5',
    });
    const leaseIds: string[] = [];
    for (const grant of grants) {
      const issued = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, { grant });
      expect(issued.status).toBe(201);
      leaseIds.push(issued.body.leaseId);
    }
    return { taskId: task.body.taskId as string, leaseIds };
  };
  const cli = (args: string[]) =>
    runTasklease(['lease', 'revoke', ...args], { TASKLEASE_ADDR: broker.url, TASKLEASE_TOKEN: admin });
  const stateOf = async (leaseId: string) => (await broker.context.deps.leases.get(leaseId))?.state;

  it('exits 5 when some leases end irrevocable, naming them; the others are revoked', async () => {
    const task = await declareWith([
      'artifacts-read',
      'artifacts-read',
      'artifacts-read',
      'artifacts-write',
      'artifacts-write',
    ]);
    const result = await cli(['--task', task.taskId, '--reason', 'INC-5', '--wait']);
    expect(result.code).toBe(5);
    expect(result.stderr.trim().split('\n').at(-2)).toBe('revoking: 3 of 5 settled, 2 irrevocable');
    expect(result.stderr).toContain('tasklease: 2 irrevocable: the backend would not revoke them');
    expect(result.stdout).toContain('settled 3 of 5 (revoked 3, irrevocable 2)');
    const [read1, read2, read3, write1, write2] = task.leaseIds as [string, string, string, string, string];
    // The irrevocable ones are listed, so on-call can act on them.
    const listed = result.stdout.split('\n').filter((line) => /^[0-9A-Za-z]{22}$/.test(line.trim()));
    expect(listed.map((line) => line.trim()).sort()).toEqual([write1, write2].sort());
    expect(await Promise.all([read1, read2, read3, write1, write2].map(stateOf))).toEqual([
      'revoked',
      'revoked',
      'revoked',
      'irrevocable',
      'irrevocable',
    ]);
  });

  it('with --force, exits 0 once the failing leases are force-closed, warning that they may still work', async () => {
    const task = await declareWith(['artifacts-read', 'artifacts-write']);
    const result = await cli(['--task', task.taskId, '--reason', 'INC-7', '--force', '--wait']);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('settled 2 of 2 (');
    expect(result.stdout).toMatch(/\((revoked 1, force-closed 1|force-closed 1, revoked 1)\)/);
    expect(result.stderr).toContain('tasklease: 1 force-closed: the backend could not revoke them');
    expect(await Promise.all(task.leaseIds.map(stateOf))).toEqual(['revoked', 'force-closed']);
  });

  it('exits 7 after --timeout, saying what is still pending; the revocation goes on', async () => {
    let release = () => undefined as void;
    hanging = { promise: new Promise<void>((resolve) => (release = resolve)), release: () => release() };
    const task = await declareWith(['artifacts-read']);
    const leaseId = task.leaseIds[0] as string;
    const result = await cli([leaseId, '--reason', 'INC-6', '--wait', '--timeout', '1']);
    expect(result.code).toBe(7);
    expect(result.stderr).toContain('tasklease: timed out after 1 s: 1 of 1 still pending (revoking 1)');
    expect(result.stdout).toContain(`lease ${leaseId}: revoking\nsettled 0 of 1 (revoking 1)`);
    expect(await stateOf(leaseId)).toBe('revoking');
    hanging.release();
    hanging = null;
    await waitFor(async () => (await stateOf(leaseId)) === 'revoked', 5_000);
  });
});
