import { createServer, type Server } from 'node:http';
import type { ProviderKind } from '../../src/domain/types';
import { startRevocationWorker } from '../../src/jobs/revocation-worker';
import { startSweeper } from '../../src/jobs/sweeper';
import { connectRedis } from '../../src/redis/connection';
import type { CredentialProvider } from '../../src/providers/provider';
import { startTestBroker, testRedisTarget, type TestBroker, type TestBrokerOptions } from './broker';

export const BACKEND_DOWN = 'backend unavailable (503)';

/** The `jwt` backend as the worker sees it, under the test's control. */
export interface FlakyBackend {
  /** While true, every revocation fails with BACKEND_DOWN. */
  down: boolean;
  /** Lease ids, one per revocation attempt. */
  calls: string[];
  /**
   * The next attempt to revoke this lease waits until released (then fails or succeeds as `down` says):
   * a job caught in the middle of trying the backend.
   */
  hold(leaseId: string): { entered: Promise<void>; release(): void };
}

export interface FlakyBroker {
  broker: TestBroker;
  backend: FlakyBackend;
  /** Every alert the webhook received (parsed bodies), in order. */
  alerts: any[];
  close(): Promise<void>;
}

/**
 * A test broker whose worker (real BullMQ worker and sweeper, in this process) revokes `jwt` leases through a
 * backend the test can break, and whose irrevocable-lease alerts go to a local receiver.
 */
export async function startFlakyBroker(options: TestBrokerOptions = {}): Promise<FlakyBroker> {
  const alerts: any[] = [];
  const receiver = await startAlertReceiver(alerts);
  const port = (receiver.address() as { port: number }).port;
  const broker = await startTestBroker({
    alerts: { irrevocableWebhook: `http://127.0.0.1:${port}/hooks/tasklease`, debounceSeconds: 1 },
    ...options,
    worker: false,
  });
  const { deps } = broker.context;
  const holds = new Map<string, { enter(): void; released: Promise<void> }>();
  const jwt = deps.providers.get('jwt') as CredentialProvider;
  const backend: FlakyBackend = {
    down: false,
    calls: [],
    hold(leaseId) {
      let enter = () => undefined as void;
      let release = () => undefined as void;
      const entered = new Promise<void>((resolve) => (enter = resolve));
      const released = new Promise<void>((resolve) => (release = resolve));
      holds.set(leaseId, { enter, released });
      return { entered, release };
    },
  };
  const flaky: CredentialProvider = {
    ...jwt,
    async revoke(lease, context) {
      backend.calls.push(lease.id);
      const held = holds.get(lease.id);
      if (held) {
        holds.delete(lease.id);
        held.enter();
        await held.released;
      }
      if (backend.down) throw new Error(BACKEND_DOWN);
      return jwt.revoke(lease, context);
    },
  };
  const workerDeps = { ...deps, providers: new Map<ProviderKind, CredentialProvider>([['jwt', flaky]]) };
  const connection = connectRedis(testRedisTarget(), { forBullWorker: true });
  const worker = startRevocationWorker(workerDeps, connection, broker.context.keys);
  const sweeper = startSweeper({
    redis: broker.context.redis,
    keys: broker.context.keys,
    leases: deps.leases,
    queue: deps.queue,
    expireApprovals: async () => 0,
    graceMs: 200,
    intervalMs: 200,
    nowMs: Date.now,
    onError: () => undefined,
  });
  return {
    broker,
    backend,
    alerts,
    async close() {
      await sweeper.stop();
      await worker.close();
      await connection.quit();
      await broker.close();
      await new Promise<void>((resolve) => receiver.close(() => resolve()));
    },
  };
}

/** A loopback webhook receiver: each POSTed body, parsed, is pushed onto `alerts` (answered 200). */
export async function startAlertReceiver(alerts: any[]): Promise<Server> {
  const receiver = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      alerts.push(JSON.parse(body));
      res.end();
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  return receiver;
}
