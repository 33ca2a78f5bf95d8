import { createServer, type Server, type Socket } from 'node:net';
import { startTestBroker, waitFor, type TestBroker } from '../support/broker';
import { startMoto, type Moto } from '../support/moto';

/**
 * A backend that accepts connections and never answers (a hung STS or IAM, as a SIGSTOPped server or a
 * black-holed load balancer behaves). Every call to it must end by its deadline: an abort, not a warning.
 */
async function startHungServer(): Promise<{
  endpoint: string;
  connections: () => number;
  close(): Promise<void>;
}> {
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server: Server = createServer((socket) => {
    accepted++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    // Reads whatever is sent, answers nothing.
    socket.resume();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (!address || typeof address !== 'object') throw new Error('no address');
  return {
    endpoint: `http://127.0.0.1:${address.port}`,
    connections: () => accepted,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const POLICIES = `
permit(principal, action == Action::"declareTask", resource);
permit(principal, action == Action::"issue", resource) when { resource.provider == "aws-sts" };
`;

describe('hung backends: every call ends by its deadline', () => {
  let hung: Awaited<ReturnType<typeof startHungServer>>;
  let moto: Moto;
  let broker: TestBroker;
  let agent: string;
  beforeAll(async () => {
    hung = await startHungServer();
    moto = await startMoto();
    const role = await moto.createRole('hung-iam-role');
    broker = await startTestBroker({
      policies: POLICIES,
      grants: {
        'hung-sts': {
          provider: 'aws-sts',
          roleArn: 'arn:aws:iam::123456789012:role/hung-sts-role',
          endpoint: hung.endpoint,
          iamEndpoint: hung.endpoint,
          maxTtlSeconds: 3600,
        },
        // STS answers (moto), IAM hangs: issuance works, revocation cannot.
        'hung-iam': {
          provider: 'aws-sts',
          roleArn: role.arn,
          endpoint: moto.endpoint,
          iamEndpoint: hung.endpoint,
          maxTtlSeconds: 3600,
        },
      },
      revocation: { attempts: 2, backoffMs: 50, irrevocableRetrySeconds: 600, sweepIntervalMs: 200 },
    });
    agent = await broker.agents.sign({ sub: 'hung-agent' });
  }, 60_000);
  afterAll(async () => {
    await broker?.close();
    await moto?.close();
    await hung?.close();
  });

  const declare = async () => {
    const task = await broker.call('POST', '/v1/tasks', agent, {
      purpose: 'hung backends',
      ticket: 'OPS-15',
    });
    expect(task.status).toBe(201);
    return task.body.taskId as string;
  };

  it('answers a credential call within 15 s, with a 5xx and a stable code, when STS never answers', async () => {
    const taskId = await declare();
    const startedMs = Date.now();
    const answer = await broker.call('POST', `/v1/tasks/${taskId}/credentials`, agent, { grant: 'hung-sts' });
    const tookMs = Date.now() - startedMs;
    expect(hung.connections()).toBeGreaterThan(0);
    expect(tookMs).toBeLessThanOrEqual(15_000);
    expect(answer.status).toBeGreaterThanOrEqual(500);
    expect(answer.status).toBeLessThan(600);
    expect(answer.body.error).toBe('unavailable');
    // Nothing was recorded for it.
    const view = await broker.call('GET', `/v1/tasks/${taskId}`, agent);
    expect(view.body.leases).toEqual([]);
  }, 30_000);

  it('a revocation against an IAM that never answers is retried, then irrevocable with its error', async () => {
    const taskId = await declare();
    const issued = await broker.call('POST', `/v1/tasks/${taskId}/credentials`, agent, { grant: 'hung-iam' });
    expect(issued.status).toBe(201);
    await broker.call('POST', `/v1/tasks/${taskId}/complete`, agent, { outcome: 'succeeded' });
    const stuck = await waitFor(
      async () => {
        const lease = await broker.context.deps.leases.get(issued.body.leaseId as string);
        return lease?.state === 'irrevocable' ? lease : null;
      },
      50_000,
      200,
    );
    expect(stuck.attempts).toBeGreaterThanOrEqual(2);
    expect(stuck.lastError).toMatch(/abort|timed? ?out/i);
  }, 60_000);
});
