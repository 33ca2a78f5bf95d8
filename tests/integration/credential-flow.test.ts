import { createLocalJWKSet, jwtVerify } from 'jose';
import { startTestBroker, waitFor, type TestBroker } from '../support/broker';
import { reconstructTask } from '../../src/cli/task-reconstruction';

describe('an agent declares a task, asks for credentials, and completes it', () => {
  let broker: TestBroker;
  let agent: string;
  beforeAll(async () => {
    broker = await startTestBroker();
    agent = await broker.agents.sign({ sub: 'planner' });
  });
  afterAll(() => broker.close());

  const declare = (token: string, body: Record<string, unknown> = {}) =>
    broker.call('POST', '/v1/tasks', token, {
      purpose: 'nightly report',
      ticket: 'OPS-7',
      ref: 'refs/heads/main',
      ...body,
    });

  it('answers 409 task_not_open, not 500, when the task completes while its credential is minted', async () => {
    const task = await declare(agent);
    const taskId = task.body.taskId as string;
    const jwt = broker.context.deps.providers.get('jwt');
    if (!jwt) throw new Error('the test broker has a jwt provider');
    const mint = jwt.mint.bind(jwt);
    // The task's completion lands between the broker's task check and the lease write.
    const spy = jest.spyOn(jwt, 'mint').mockImplementationOnce(async (request) => {
      const minted = await mint(request);
      const completed = await broker.call('POST', `/v1/tasks/${taskId}/complete`, agent, {
        outcome: 'succeeded',
      });
      expect(completed.status).toBe(200);
      return minted;
    });
    try {
      const raced = await broker.call('POST', `/v1/tasks/${taskId}/credentials`, agent, {
        grant: 'artifacts-read',
      });
      expect([raced.status, raced.body.error]).toEqual([409, 'task_not_open']);
      expect(raced.body.message).toContain('completed or expired while the credential was minted');
    } finally {
      spy.mockRestore();
    }
    // Nothing was recorded against the closed task.
    const view = await broker.call('GET', `/v1/tasks/${taskId}`, agent);
    expect(view.body.leases).toEqual([]);
  });

  it('revokes at once a credential minted for a caller that hung up before it was returned', async () => {
    const task = await declare(agent);
    const taskId = task.body.taskId as string;
    const jwt = broker.context.deps.providers.get('jwt');
    if (!jwt) throw new Error('the test broker has a jwt provider');
    const mint = jwt.mint.bind(jwt);
    let minted!: () => void;
    const mintDone = new Promise<void>((resolve) => (minted = resolve));
    // A slow backend: the caller gives up while the credential is being minted.
    const spy = jest.spyOn(jwt, 'mint').mockImplementationOnce(async (request) => {
      await new Promise((resolve) => setTimeout(resolve, 400));
      const credential = await mint(request);
      minted();
      return credential;
    });
    try {
      const gaveUp = new AbortController();
      setTimeout(() => gaveUp.abort(), 100);
      await expect(
        fetch(`${broker.url}/v1/tasks/${taskId}/credentials`, {
          method: 'POST',
          headers: { authorization: `Bearer ${agent}`, 'content-type': 'application/json' },
          body: JSON.stringify({ grant: 'artifacts-read' }),
          signal: gaveUp.signal,
        }),
      ).rejects.toThrow();
      await mintDone;
    } finally {
      spy.mockRestore();
    }
    const lease = await waitFor(async () => {
      const view = await broker.call('GET', `/v1/tasks/${taskId}`, agent);
      const [only] = view.body.leases as { state: string; revokeReason?: string }[];
      return only && only.state !== 'active' ? only : null;
    }, 5_000);
    expect(['revoking', 'revoked']).toContain(lease.state);
    const events = await broker.context.deps.audit.query({ task: taskId, limit: 100 });
    expect(events.find((event) => event.type === 'lease.revoke_requested')).toMatchObject({
      reason: 'the caller disconnected before the credential was returned',
    });
  });

  it("records a credential's event naming its task, and task show still rebuilds the task's ticket and ref", async () => {
    const task = await declare(agent);
    const taskId = task.body.taskId as string;
    const issued = await broker.call('POST', `/v1/tasks/${taskId}/credentials`, agent, {
      grant: 'artifacts-read',
      ttlSeconds: 120,
    });
    expect(issued.status).toBe(201);
    const raw = await broker.context.deps.audit.queryRaw({ task: taskId, limit: 100 });
    const events = raw.map((entry) => JSON.parse(entry.json) as Record<string, unknown>);
    const event = events.find((candidate) => candidate.type === 'credential.issued') as Record<
      string,
      unknown
    >;
    // Who, which task, which grant and lease, which token and credential (hashes), why, and the request's
    // terms; the task's ticket and ref are its task.declared's.
    expect(Object.keys(event).sort()).toEqual(
      [
        'atMs',
        'credentialSha256',
        'detail',
        'grant',
        'issuer',
        'lease',
        'reason',
        'subject',
        'task',
        'tokenSha256',
        'type',
      ].sort(),
    );
    expect(event).toMatchObject({ task: taskId, lease: issued.body.leaseId, grant: 'artifacts-read' });
    expect(events.find((candidate) => candidate.type === 'task.declared')).toMatchObject({
      ticket: 'OPS-7',
      ref: 'refs/heads/main',
    });
    const story = reconstructTask(taskId, raw);
    expect(story.task).toMatchObject({ ticket: 'OPS-7', ref: 'refs/heads/main', purpose: 'nightly report' });
    expect(story.leases).toEqual([
      expect.objectContaining({ lease: issued.body.leaseId, grant: 'artifacts-read', state: 'active' }),
    ]);
  });

  it('issues a JWT bound to the task, scoped to the grant, verifiable with the published JWKS', async () => {
    const task = await declare(agent);
    expect(task.status).toBe(201);
    const issued = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
      grant: 'artifacts-read',
      ttlSeconds: 120,
    });
    expect(issued.status).toBe(201);
    expect(issued.body).toMatchObject({
      grant: 'artifacts-read',
      provider: 'jwt',
      credential: { tokenType: 'Bearer' },
    });

    const jwks = await broker.call('GET', '/.well-known/jwks.json', null);
    expect(jwks.body.keys[0]).not.toHaveProperty('d');
    const { payload } = await jwtVerify(issued.body.credential.token, createLocalJWKSet(jwks.body), {
      audience: 'https://artifacts.test',
    });
    expect(payload).toMatchObject({
      sub: 'planner',
      jti: issued.body.leaseId,
      task: task.body.taskId,
      scope: 'artifacts:read',
    });
    expect((payload.exp as number) - (payload.iat as number)).toBe(120);
  });

  it('clamps the TTL to the grant maximum', async () => {
    const task = await declare(agent);
    const issued = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
      grant: 'artifacts-write',
      ttlSeconds: 3600,
    });
    expect(issued.status).toBe(201);
    const lifetimeMs = Date.parse(issued.body.expiresAt) - Date.now();
    expect(lifetimeMs).toBeLessThanOrEqual(300_000);
    expect(lifetimeMs).toBeGreaterThan(290_000);
  });

  it('clamps the TTL to what is left of the task', async () => {
    const task = await declare(agent, { ttlSeconds: 30 });
    const issued = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
      grant: 'artifacts-read',
    });
    expect(Date.parse(issued.body.expiresAt)).toBeLessThanOrEqual(Date.parse(task.body.expiresAt));
  });

  it('answers 403 policy_denied when no policy permits, and records no lease', async () => {
    const task = await declare(agent, { ref: 'refs/heads/feature' });
    const denied = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
      grant: 'artifacts-write',
    });
    expect(denied.status).toBe(403);
    expect(denied.body.error).toBe('policy_denied');
    const view = await broker.call('GET', `/v1/tasks/${task.body.taskId}`, agent);
    expect(view.body.leases).toEqual([]);
  });

  it('refuses to declare a task the policy does not permit', async () => {
    const denied = await declare(agent, { ticket: 'DEV-1' });
    expect(denied.status).toBe(403);
    expect(denied.body.error).toBe('policy_denied');
  });

  it('revokes a lease within 2 s of its expiry, through the worker', async () => {
    const task = await declare(agent);
    const issued = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
      grant: 'artifacts-read',
      ttlSeconds: 1,
    });
    const expiresAtMs = Date.parse(issued.body.expiresAt);
    const lease = await waitFor(async () => {
      const view = await broker.call('GET', `/v1/tasks/${task.body.taskId}`, agent);
      const found = view.body.leases.find((l: { leaseId: string }) => l.leaseId === issued.body.leaseId);
      return found.state === 'expired' ? found : null;
    }, 5_000);
    expect(lease.revocation).toBe('expired-at-source');
    expect(Date.parse(lease.revokedAt) - expiresAtMs).toBeLessThan(2_000);
  });

  it('completing a task revokes every lease in it, returns a signed record, and closes the task', async () => {
    const task = await declare(agent);
    const leaseIds: string[] = [];
    for (let i = 0; i < 3; i++) {
      const issued = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
        grant: 'artifacts-read',
      });
      leaseIds.push(issued.body.leaseId);
    }
    const done = await broker.call('POST', `/v1/tasks/${task.body.taskId}/complete`, agent, {
      outcome: 'succeeded',
      summary: 'report sent',
    });
    expect(done.status).toBe(200);
    expect([...done.body.revokedLeases].sort()).toEqual([...leaseIds].sort());

    const jwks = await broker.call('GET', '/.well-known/jwks.json', null);
    const { payload, protectedHeader } = await jwtVerify(done.body.record, createLocalJWKSet(jwks.body), {
      issuer: 'tasklease-test',
    });
    expect(protectedHeader.typ).toBe('tasklease-task-record+jwt');
    expect(payload).toMatchObject({
      task: {
        id: task.body.taskId,
        subject: 'planner',
        issuer: 'agents',
        ticket: 'OPS-7',
        ref: 'refs/heads/main',
        outcome: 'succeeded',
        state: 'completed',
      },
      grantsIssued: ['artifacts-read'],
    });
    expect((payload.leases as { id: string }[]).map((l) => l.id).sort()).toEqual([...leaseIds].sort());

    await waitFor(async () => {
      const view = await broker.call('GET', `/v1/tasks/${task.body.taskId}`, agent);
      return view.body.leases.every((l: { state: string }) => l.state === 'revoked');
    }, 3_000);
    const again = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
      grant: 'artifacts-read',
    });
    expect(again.status).toBe(409);
    expect(again.body.error).toBe('task_not_open');
    const twice = await broker.call('POST', `/v1/tasks/${task.body.taskId}/complete`, agent, {
      outcome: 'failed',
    });
    expect(twice.body.error).toBe('task_already_completed');
  });

  it('keeps tasks private: another identity can neither read, use nor complete them', async () => {
    const task = await declare(agent);
    const intruder = await broker.agents.sign({ sub: 'someone-else' });
    for (const [method, route, body] of [
      ['GET', `/v1/tasks/${task.body.taskId}`, undefined],
      ['POST', `/v1/tasks/${task.body.taskId}/credentials`, { grant: 'artifacts-read' }],
      ['POST', `/v1/tasks/${task.body.taskId}/complete`, { outcome: 'cancelled' }],
    ] as const) {
      const response = await broker.call(method, route, intruder, body);
      expect(response.status).toBe(404);
      expect(response.body.error).toBe('not_found');
    }
    const view = await broker.call('GET', `/v1/tasks/${task.body.taskId}`, agent);
    expect(view.body.state).toBe('open');
  });
});
