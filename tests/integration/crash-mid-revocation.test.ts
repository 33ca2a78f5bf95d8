import path from 'node:path';
import { startTestBroker, testRedisUrl, waitFor, type TestBroker } from '../support/broker';
import { tempDir } from '../support/fixtures';
import {
  freePort,
  spawnTasklease,
  startServeProcess,
  waitForHttp,
  type TaskleaseProcess,
} from '../support/processes';

/** Any agent may declare tasks and take any grant: this file is about revoking them. */
const POLICIES = `
@id("declare")
permit(principal, action == Action::"declareTask", resource);
@id("issue")
permit(principal, action == Action::"issue", resource) when { principal.issuer == "agents" };
`;
/** The issue's deadline for a new worker to finish a revocation its predecessor was killed in. */
const FINISH_DEADLINE_MS = 10_000;
const SETTLED = new Set(['revoked', 'expired', 'force-closed']);

/**
 * Processes killed with SIGKILL in the middle of a bulk revocation, through the real `tasklease serve` and
 * `tasklease worker` binaries against a real Redis: no lease is left changed without its audit entry, a new
 * worker finishes what a dead one left, and a worker that cannot start exits instead of idling.
 */
describe('SIGKILL mid bulk revocation', () => {
  let broker: TestBroker;
  let admin: string;
  let agent: string;
  let auditFile: string;
  const processes: TaskleaseProcess[] = [];

  beforeAll(async () => {
    auditFile = path.join(tempDir('crash-audit'), 'audit.jsonl');
    broker = await startTestBroker({ worker: false, policies: POLICIES, audit: { file: auditFile } });
    admin = await broker.admins.sign({ sub: 'oncall@example.com' }, { ttlSeconds: 3600 });
    agent = await broker.agents.sign({ sub: 'fleet-agent' }, { ttlSeconds: 3600 });
  });
  afterEach(async () => {
    await Promise.all(processes.splice(0).map((proc) => proc.stop()));
  });
  afterAll(async () => {
    await broker.close();
  });

  const spawnWorker = async () => {
    const port = await freePort();
    const env = { TASKLEASE_CONFIG: broker.configFile, REDIS_URL: testRedisUrl(), WORKER_PORT: String(port) };
    const proc = spawnTasklease(['worker'], env);
    processes.push(proc);
    return { proc, readyz: `http://127.0.0.1:${port}/readyz` };
  };
  const startWorker = async () => {
    const worker = await spawnWorker();
    await waitForHttp(worker.readyz, worker.proc);
    return worker;
  };
  const startServe = () => startServeProcess({ ...broker, redisUrl: testRedisUrl() }, processes);
  const exited = (proc: TaskleaseProcess) =>
    proc.child.exitCode !== null || proc.child.signalCode !== null
      ? Promise.resolve()
      : new Promise<void>((resolve) => proc.child.once('exit', () => resolve()));

  /** A task of its own with `count` leases, issued through the API 50 at a time. */
  const issueMany = async (count: number): Promise<{ taskId: string; ids: string[] }> => {
    const task = await broker.call('POST', '/v1/tasks', agent, { purpose: 'fleet', ticket: 'OPS-1' });
    expect(task.status).toBe(201);
    const ids: string[] = [];
    for (let i = 0; i < count; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(50, count - i) }, () =>
          broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
            grant: 'artifacts-read',
          }),
        ),
      );
      for (const response of batch) {
        expect(response.status).toBe(201);
        ids.push(response.body.leaseId);
      }
    }
    return { taskId: task.body.taskId, ids };
  };
  const bulkRevoke = (url: string, taskId: string) =>
    fetch(`${url}/v1/leases/revoke`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ selector: { task: taskId }, reason: 'INC-7: leaked runner' }),
    });
  const countStates = async (ids: string[]) =>
    (await broker.context.deps.revocations.countStates(ids, 0)).byState;
  const settledCount = async (ids: string[]) => {
    const byState = await countStates(ids);
    return [...SETTLED].reduce((sum, state) => sum + (byState[state] ?? 0), 0);
  };

  /** Each lease's audit event types, in stream order, read from the whole stream. */
  const auditTypesByLease = async (): Promise<Map<string, string[]>> => {
    const types = new Map<string, string[]>();
    let afterId: string | undefined;
    for (;;) {
      const page = await broker.context.deps.audit.entries(afterId, 5000);
      for (const { json } of page) {
        const event = JSON.parse(json) as { type: string; lease?: string };
        if (event.lease) types.set(event.lease, [...(types.get(event.lease) ?? []), event.type]);
      }
      if (page.length < 5000) return types;
      afterId = page[page.length - 1]?.id;
    }
  };

  it('the API killed mid bulk revoke leaves no lease revoking or settled without its audit entry', async () => {
    const { taskId, ids } = await issueMany(3_000);
    const serve = await startServe();
    await startWorker();

    // Kill the API as soon as the first leases are revoking (due now, no longer at their expiry).
    const revoking = () => broker.context.redis.zcount(broker.context.keys.due(), '-inf', Date.now());
    const request = bulkRevoke(serve.url, taskId).catch(() => null);
    await waitFor(async () => (await revoking()) > 0, 20_000, 1);
    serve.proc.child.kill('SIGKILL');
    await request;
    await exited(serve.proc);
    const afterKill = await countStates(ids);
    // Killed mid-batch: some leases had started, some had not.
    expect(afterKill.active ?? 0).toBeGreaterThan(0);
    expect(afterKill.active ?? 0).toBeLessThan(ids.length);

    // On-call runs the revocation again against a new API; the worker settles everything.
    const again = await startServe();
    expect((await bulkRevoke(again.url, taskId)).status).toBe(200);
    await waitFor(async () => (await settledCount(ids)) === ids.length, 30_000, 100);

    // Every lease: one revocation request on record and one settlement, none missing, none twice.
    const types = await auditTypesByLease();
    const wrong = ids.filter((id) => {
      const seen = types.get(id) ?? [];
      const count = (type: string) => seen.filter((t) => t === type).length;
      return count('lease.revoke_requested') !== 1 || count('lease.settled') !== 1;
    });
    expect({ leases: ids.length, wrong: wrong.length, example: types.get(wrong[0] ?? '') }).toEqual({
      leases: ids.length,
      wrong: 0,
      example: undefined,
    });
  }, 120_000);

  /**
   * Kills a worker once it has settled some of 2,000 leases being revoked, then starts a replacement after
   * `delayMs`: within the deadline the replacement finishes every lease, or it has exited non-zero (and the
   * next one finishes them). Alive and not finishing is the failure.
   */
  async function killAndReplace(delayMs: number) {
    const { taskId, ids } = await issueMany(2_000);
    const first = (await startWorker()).proc;
    expect((await bulkRevoke(broker.url, taskId)).status).toBe(200);
    await waitFor(async () => (await settledCount(ids)) > 0, 20_000, 5);
    first.child.kill('SIGKILL');
    await exited(first);
    expect(await settledCount(ids)).toBeLessThan(ids.length);
    await new Promise((resolve) => setTimeout(resolve, delayMs));

    let replacement = await spawnWorker();
    let startedAt = Date.now();
    const finished = async () => (await settledCount(ids)) === ids.length;
    const outcome = await waitFor(
      async () => ((await finished()) ? 'finished' : replacement.proc.child.exitCode !== null && 'exited'),
      FINISH_DEADLINE_MS + 5_000,
      50,
    ).catch(() => 'neither');
    if (outcome === 'exited') {
      expect(replacement.proc.child.exitCode).not.toBe(0);
      replacement = await spawnWorker();
      startedAt = Date.now();
      await waitFor(finished, FINISH_DEADLINE_MS + 5_000, 50).catch(() => undefined);
    }
    const tookMs = Date.now() - startedAt;
    expect({
      outcome: outcome === 'exited' ? 'finished' : outcome,
      settled: await settledCount(ids),
    }).toEqual({
      outcome: 'finished',
      settled: ids.length,
    });
    // The new worker finished within the deadline after it was started (its start-up included).
    expect(tookMs).toBeLessThanOrEqual(FINISH_DEADLINE_MS);
    expect(replacement.proc.child.exitCode).toBeNull();
    return { tookMs, outcome };
  }

  it('a worker killed mid bulk revocation of 2,000: a new worker finishes them within 10 s', async () => {
    await killAndReplace(0);
  }, 120_000);

  it('the same with the replacement started 300 ms after the kill, among the dead worker’s locks', async () => {
    await killAndReplace(300);
  }, 120_000);

  it('a second worker given an audit file another live worker holds exits non-zero naming the file', async () => {
    const holder = await startWorker();
    const startedAt = Date.now();
    const second = await spawnWorker();
    await exited(second.proc);
    // Within the start-up deadline of `tasklease worker` (15 s), which it never needs: the lock is its first step.
    expect(Date.now() - startedAt).toBeLessThan(15_000);
    expect(second.proc.child.exitCode).not.toBe(0);
    expect(second.proc.output()).toMatch(/could not start: cannot keep the audit file/);
    expect(second.proc.output()).toContain(auditFile);
    // The holder carries on.
    expect(holder.proc.child.exitCode).toBeNull();
    expect((await fetch(holder.readyz)).status).toBe(200);
  }, 60_000);
});
