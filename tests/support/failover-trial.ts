import { isSettled } from '../../src/domain/types';
import { waitFor, type TestBroker, type TestBrokerOptions } from './broker';
import { expectAuditVerifies } from './journey';
import { freePort, runTasklease, spawnTasklease, waitForHttp, type TaskleaseProcess } from './processes';

/**
 * The tested shape of a deployment, two `serve` and two `worker` processes against one replicated Redis,
 * under steady issuance through both APIs while the Redis primary fails over. What a user would notice is
 * measured: how long issuance stopped, whether any request sent well after the promotion failed, and
 * whether every credential returned has its lease afterwards, settled in the end.
 */
export interface TrialReport {
  /** Credentials returned (201), each with its lease id. */
  returned: number;
  /** Of those, leases missing afterwards: must be 0. */
  lost: string[];
  /** Requests that failed, and those of them sent more than 10 s after the promotion (must be 0). */
  failed: number;
  failedLate: number;
  /** From the promotion to the first credential returned after it. */
  recoveredAfterMs: number;
  /** `tasklease_audit_sealing_halted` on each API process. */
  sealingHalted: number[];
  /** Why `tasklease audit verify` (run once everything is sealed) did not pass; undefined when it did. */
  auditProblem?: string;
  /** What the four processes logged at warn and above, for a failing trial's report. */
  logs: string;
}

/**
 * The brokers the trials start (their config is what the four processes read): issuance allowed, every
 * lease write confirmed by one replica, sealing and sweeping quick enough to settle within a trial.
 */
export const STEADY_BROKER: TestBrokerOptions & { broker: NonNullable<TestBrokerOptions['broker']> } = {
  worker: false,
  policies: `
permit(principal, action == Action::"declareTask", resource);
permit(principal, action == Action::"issue", resource == Grant::"artifacts-read");`,
  broker: { replicaAcks: 1, replicaAckTimeoutMs: 1000 },
  audit: { sealIntervalMs: 200 },
  revocation: { sweepIntervalMs: 500, sweepGraceMs: 500 },
};

/** What a user must see of a failover: nothing returned lost, issuing again within 10 s, the audit intact. */
export function expectNothingLost(label: string, report: TrialReport): void {
  console.info(`${label}:`, JSON.stringify({ ...report, lost: report.lost.length, logs: undefined }));
  if (report.auditProblem) console.info(report.logs);
  expect(report.auditProblem).toBeUndefined();
  expect(report.returned).toBeGreaterThan(100);
  expect(report.lost).toEqual([]);
  expect(report.failedLate).toBe(0);
  expect(report.recoveredAfterMs).toBeLessThanOrEqual(RECOVERY_LIMIT_MS);
  expect(report.sealingHalted).toEqual([0, 0]);
}

interface Sent {
  sentAtMs: number;
  status: number;
  leaseId?: string;
}

const REQUESTS_PER_SECOND = 25;
const RECOVERY_LIMIT_MS = 10_000;

export async function runFailoverTrial(options: {
  broker: TestBroker;
  redisUrl: string;
  /** Causes the failover; resolves at the promotion (when the new primary is known to be primary). */
  failover: () => Promise<void>;
  /** How long to keep issuing after the promotion. */
  afterMs?: number;
}): Promise<TrialReport> {
  const { broker } = options;
  const env = {
    TASKLEASE_CONFIG: broker.configFile,
    TASKLEASE_SIGNING_KEYS: broker.signingKeysJson,
    REDIS_URL: options.redisUrl,
  };
  const processes: TaskleaseProcess[] = [];
  try {
    const apis: string[] = [];
    for (let i = 0; i < 2; i++) {
      const port = await freePort();
      const api = spawnTasklease(['serve'], { ...env, PORT: String(port) });
      processes.push(api);
      await waitForHttp(`http://127.0.0.1:${port}/readyz`, api, 20_000);
      apis.push(`http://127.0.0.1:${port}`);
    }
    for (let i = 0; i < 2; i++) {
      const port = await freePort();
      const worker = spawnTasklease(['worker'], { ...env, WORKER_PORT: String(port) });
      processes.push(worker);
      await waitForHttp(`http://127.0.0.1:${port}/readyz`, worker, 20_000);
    }

    const agent = await broker.agents.sign({ sub: 'steady' }, { ttlSeconds: 600 });
    const task = await call(apis[0] as string, '/v1/tasks', agent, {
      purpose: 'steady issuance',
      ticket: 'OPS-9',
    });
    if (task.status !== 201) throw new Error(`declare answered ${task.status}`);
    const taskId = (task.body as { taskId: string }).taskId;

    const sent: Sent[] = [];
    let issuing = true;
    const load = (async () => {
      const inFlight: Promise<void>[] = [];
      for (let n = 0; issuing; n++) {
        const sentAtMs = Date.now();
        const api = apis[n % apis.length] as string;
        inFlight.push(
          call(api, `/v1/tasks/${taskId}/credentials`, agent, {
            grant: 'artifacts-read',
            ttlSeconds: 5,
          }).then(
            ({ status, body }) =>
              void sent.push({ sentAtMs, status, leaseId: (body as { leaseId?: string } | null)?.leaseId }),
            () => void sent.push({ sentAtMs, status: 0 }),
          ),
        );
        await new Promise((resolve) => setTimeout(resolve, 1000 / REQUESTS_PER_SECOND));
      }
      await Promise.all(inFlight);
    })();

    await new Promise((resolve) => setTimeout(resolve, 2_000));
    await options.failover();
    const promotedAtMs = Date.now();
    await new Promise((resolve) => setTimeout(resolve, options.afterMs ?? RECOVERY_LIMIT_MS + 3_000));
    issuing = false;
    await load;

    const returned = sent.filter((request) => request.status === 201 && request.leaseId);
    const ids = returned.map((request) => request.leaseId as string);
    const { leases } = broker.context.deps;
    // Each returned lease settles (revoked or expired) in the end; a lost one never shows up at all.
    await waitFor(
      async () => {
        const found = await leases.getMany(ids).catch(() => []);
        return found.length === ids.length && found.every((lease) => isSettled(lease.state));
      },
      30_000,
      250,
    ).catch(() => undefined);
    const found = new Set((await leases.getMany(ids)).map((lease) => lease.id));
    const failed = sent.filter((request) => request.status !== 201);
    const firstAfter = returned.find((request) => request.sentAtMs >= promotedAtMs);
    const sealingHalted = await Promise.all(
      apis.map(async (api) => {
        const text = await (await fetch(`${api}/metrics`)).text();
        return Number(/^tasklease_audit_sealing_halted (\S+)/m.exec(text)?.[1] ?? 'NaN');
      }),
    );
    const admin = await broker.admins.sign({ sub: 'oncall@example.com' });
    const auditProblem = await expectAuditVerifies(broker, (args) =>
      runTasklease(
        args,
        { TASKLEASE_ADDR: apis[0] as string, TASKLEASE_TOKEN: admin },
        { timeoutMs: 60_000 },
      ),
    ).then(
      () => undefined,
      (error: Error) => error.message,
    );
    return {
      auditProblem,
      logs: processes.map((process) => process.output()).join('\n'),
      returned: returned.length,
      lost: ids.filter((id) => !found.has(id)),
      failed: failed.length,
      failedLate: failed.filter((request) => request.sentAtMs > promotedAtMs + RECOVERY_LIMIT_MS).length,
      recoveredAfterMs: firstAfter ? firstAfter.sentAtMs - promotedAtMs : Infinity,
      sealingHalted,
    };
  } finally {
    await Promise.all(processes.map((process) => process.stop()));
  }
}

async function call(base: string, route: string, token: string, body: unknown) {
  const response = await fetch(`${base}${route}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(20_000),
  });
  const text = await response.text();
  return { status: response.status, body: text ? (JSON.parse(text) as unknown) : null };
}
