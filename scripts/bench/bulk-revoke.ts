import type { Redis } from 'ioredis';
import { issue, readLeases, waitUntilSettled } from './leases';
import { jsonRequest, keepAliveAgent, send, summarise, type Target } from './load-generator';
import { BENCH_ADMIN, BENCH_BULK_GRANT, type BenchEnvironment } from './processes';
import type { Row } from './report';

export interface BulkRevocationResult {
  leases: number;
  issueFailures: number;
  issueMs: number;
  /** What the API answered: how many it matched and started. */
  matched: number;
  revoked: number;
  /** Wall time of `POST /v1/leases/revoke`, seen by the caller. */
  callMs: number;
  /** From sending the call to the last lease settled by the worker (its `revokedAtMs`). */
  allSettledMs: number;
  /** From the first lease settled to the last: the worker's share. */
  workerDrainMs: number;
  unsettled: number;
  states: Record<string, number>;
  /** `GET /v1/leases/revocations/{id}` once everything settled (what `lease revoke --wait` polls): median of 5. */
  progressPollMs: number;
  progressSettled: number;
  /** CPU each process used from the call to the last settlement, per lease (ms): steadier than wall time. */
  cpuMsPerLease: Record<string, number | null>;
}

/**
 * The emergency brake at scale: `count` active long-lived leases of their own grant, issued through the real
 * API (identity, Cedar, lease write, expiry job), then one bulk revocation by that grant over HTTP, as
 * `tasklease lease revoke --grant` sends it, and the real worker settling every lease.
 */
export async function measureBulkRevocation(
  redis: Redis,
  env: BenchEnvironment,
  target: Target,
  options: { count: number; connections: number; timeoutMs: number },
): Promise<BulkRevocationResult> {
  const { ids, failures, ms } = await issue(target, options.count, options.connections);
  const admin = await env.identityToken(BENCH_ADMIN);
  const agent = keepAliveAgent(1);
  try {
    const body = { selector: { grant: BENCH_BULK_GRANT }, reason: 'bench: bulk revocation' };
    const cpuBefore = env.cpuSeconds();
    const startedMs = Date.now();
    const reply = await send(agent, env.api.port, jsonRequest('/v1/leases/revoke', admin, body));
    const callMs = Date.now() - startedMs;
    if (reply.status !== 200) throw new Error(`bulk revoke failed: ${reply.status} ${reply.body.toString()}`);
    const answer = JSON.parse(reply.body.toString()) as {
      matched: number;
      revoked: number;
      revocationId: string;
    };

    const unsettled = await waitUntilSettled(redis, ids, options.timeoutMs);
    const cpuMsPerLease = perLease(cpuBefore, env.cpuSeconds(), ids.length);
    const rows = await readLeases(redis, ids, ['state', 'revokedAtMs']);
    const states: Record<string, number> = {};
    const settledAt: number[] = [];
    for (const [state, revokedAt] of rows) {
      states[state ?? 'missing'] = (states[state ?? 'missing'] ?? 0) + 1;
      if (revokedAt) settledAt.push(Number(revokedAt));
    }
    const complete = unsettled.length === 0 && ids.length > 0;
    const poll = await timedProgressPoll(agent, env.api.port, admin, answer.revocationId);
    return {
      leases: ids.length,
      issueFailures: failures,
      issueMs: ms,
      matched: answer.matched,
      revoked: answer.revoked,
      callMs,
      allSettledMs: complete ? Math.max(...settledAt) - startedMs : NaN,
      workerDrainMs: complete ? Math.max(...settledAt) - Math.min(...settledAt) : NaN,
      unsettled: unsettled.length,
      states,
      progressPollMs: poll.ms,
      progressSettled: poll.settled,
      cpuMsPerLease,
    };
  } finally {
    agent.destroy();
  }
}

function perLease(
  before: Record<string, number | null>,
  after: Record<string, number | null>,
  leases: number,
): Record<string, number | null> {
  return Object.fromEntries(
    Object.entries(after).map(([name, seconds]) => {
      const start = before[name];
      if (seconds === null || start === null || start === undefined) return [name, null];
      return [name, Math.round(((seconds - start) * 1000 * 1000) / Math.max(1, leases)) / 1000];
    }),
  );
}

/** `GET /v1/leases/revocations/{id}` five times (the first on a cold path): the median, and what it said. */
async function timedProgressPoll(
  agent: ReturnType<typeof keepAliveAgent>,
  port: number,
  token: string,
  revocationId: string,
): Promise<{ ms: number; settled: number }> {
  const request = {
    path: `/v1/leases/revocations/${revocationId}`,
    headers: { authorization: `Bearer ${token}` },
    body: Buffer.alloc(0),
  };
  const times: number[] = [];
  let settled = NaN;
  for (let i = 0; i < 5; i++) {
    const startedMs = performance.now();
    const reply = await send(agent, port, request, 'GET');
    times.push(performance.now() - startedMs);
    if (reply.status !== 200)
      throw new Error(`progress poll failed: ${reply.status} ${reply.body.toString()}`);
    settled = (JSON.parse(reply.body.toString()) as { settled: number }).settled;
  }
  return { ms: Math.round(summarise(times).p50Ms * 10) / 10, settled };
}

/**
 * The bench table's rows. "Finishes in seconds" (the on-call issue) is read as: from sending the call to the
 * last lease settled, at most 10 s.
 */
export function bulkRevocationRows(bulk: BulkRevocationResult): Row[] {
  return [
    { measure: `bulk revoke of ${bulk.leases}: API call`, value: bulk.callMs, unit: 'ms' },
    {
      measure: `bulk revoke of ${bulk.leases}: call → all settled`,
      value: bulk.allSettledMs,
      unit: 'ms',
      target: { op: '<=', limit: 10_000, label: 'in seconds (<= 10,000 ms)' },
    },
    { measure: 'bulk revoke: worker drain (first → last settle)', value: bulk.workerDrainMs, unit: 'ms' },
    {
      measure: 'bulk revoke: leases not ended revoked',
      value: bulk.leases - (bulk.states.revoked ?? 0) + bulk.issueFailures,
      unit: '',
      target: { op: '<=', limit: 0 },
    },
    { measure: 'bulk revoke: worker CPU per lease', value: bulk.cpuMsPerLease.worker ?? NaN, unit: 'ms' },
    { measure: 'bulk revoke: API CPU per lease', value: bulk.cpuMsPerLease.api ?? NaN, unit: 'ms' },
    { measure: 'bulk revoke: one progress poll (--wait), median', value: bulk.progressPollMs, unit: 'ms' },
  ];
}
