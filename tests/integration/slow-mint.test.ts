import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startTestBroker, type TestBroker } from '../support/broker';
import { startMoto, type Moto } from '../support/moto';

const POLICIES = `
@id("declare")
permit(principal, action == Action::"declareTask", resource);
@id("aws")
permit(principal, action == Action::"issue", resource) when { resource.provider == "aws-sts" };
`;
const DELAY_MS = 1_500;

/** An HTTP proxy on loopback that holds each request `delayMs` before passing it to `target`: a slow STS. */
async function startDelayingProxy(target: string, delayMs: number): Promise<Server> {
  const { hostname, port } = new URL(target);
  const proxy = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      setTimeout(() => {
        const upstream = request(
          { hostname, port, path: req.url, method: req.method, headers: req.headers },
          (answer) => {
            res.writeHead(answer.statusCode ?? 502, answer.headers);
            answer.pipe(res);
          },
        );
        upstream.on('error', () => res.destroy());
        upstream.end(Buffer.concat(chunks));
      }, delayMs);
    });
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  return proxy;
}

/**
 * A task completed while its STS session is being minted (STS slow, behind a delaying proxy): the call
 * answers 409 task_not_open, never a 500 and never a credential, and the session minted for nothing is
 * denied at once (the deny is written to the role; moto does not enforce it).
 */
describe('a task completed during a slow mint', () => {
  let moto: Moto;
  let proxy: Server;
  let broker: TestBroker;
  let agent: string;
  let role: { arn: string; roleId: string };

  beforeAll(async () => {
    moto = await startMoto();
    role = await moto.createRole('slow-writer');
    proxy = await startDelayingProxy(moto.endpoint, DELAY_MS);
    broker = await startTestBroker({
      policies: POLICIES,
      grants: {
        'slow-write': {
          provider: 'aws-sts',
          roleArn: role.arn,
          // STS through the slow proxy; IAM (where the deny goes) direct.
          endpoint: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`,
          iamEndpoint: moto.endpoint,
          maxTtlSeconds: 3600,
        },
      },
    });
    agent = await broker.agents.sign({ sub: 'slow-agent' });
  });
  afterAll(async () => {
    await broker?.close();
    await new Promise<void>((resolve) => proxy?.close(() => resolve()));
    await moto?.close();
  });

  const deniedSessions = async () =>
    ((await moto.denyPolicy('slow-writer'))?.Statement ?? []).flatMap(
      (s) => s.Condition?.StringEquals?.['aws:userid'] ?? [],
    ) as string[];

  it('answers 409 task_not_open to every racing call, and denies each session minted for it', async () => {
    const task = await broker.call('POST', '/v1/tasks', agent, { purpose: 'slow mint', ticket: 'OPS-8' });
    expect(task.status).toBe(201);
    const taskId = task.body.taskId as string;
    await moto.recorded(); // only this test's requests from here on

    const calls = Array.from({ length: 5 }, () =>
      broker.call('POST', `/v1/tasks/${taskId}/credentials`, agent, { grant: 'slow-write' }),
    );
    // The calls are in the proxy, waiting on STS, when the task completes.
    await new Promise((resolve) => setTimeout(resolve, DELAY_MS / 3));
    const completed = await broker.call('POST', `/v1/tasks/${taskId}/complete`, agent, {
      outcome: 'succeeded',
    });
    expect(completed.status).toBe(200);
    const answers = await Promise.all(calls);
    expect(answers.map((answer) => answer.status)).toEqual(Array(5).fill(409));
    for (const answer of answers)
      expect(answer.body).toEqual({
        error: 'task_not_open',
        message: 'the task was completed or expired while the credential was minted',
      });

    // Every session STS minted for the calls is in the role's deny policy.
    const sessions = (await moto.recorded())
      .filter((form) => form.get('Action') === 'AssumeRole')
      .map((form) => `${role.roleId}:${form.get('RoleSessionName')}`);
    expect(sessions).toHaveLength(5);
    const denied = await deniedSessions();
    for (const session of sessions) expect(denied).toContain(session);
    // And no lease was recorded for any of them.
    const view = await broker.call('GET', `/v1/tasks/${taskId}`, agent);
    expect(view.body.leases).toEqual([]);
  });
});
