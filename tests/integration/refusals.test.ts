import { startTestBroker, type TestBroker } from '../support/broker';

const POLICIES = `
@id("declare")
permit(principal, action == Action::"declareTask", resource)
when { context.task.ticket != "DENY-1" };
@id("read")
permit(principal, action == Action::"issue", resource == Grant::"artifacts-read");
`;

const BUDGET = 30;

/**
 * A caller refused over and over cannot fill the audit log: each identity has a refusal budget a minute
 * (broker.refusalsPerMinutePerIdentity); beyond it one refusal.limited event stands for the rest, which answer
 * 429 too_many_refusals and are only counted. A forbidden admin call keeps nothing of what the caller sent.
 */
describe('refusals: audited within a budget, never an unbounded log', () => {
  let broker: TestBroker;
  beforeAll(async () => {
    broker = await startTestBroker({
      policies: POLICIES,
      broker: { refusalsPerMinutePerIdentity: BUDGET },
    });
  });
  afterAll(async () => {
    await broker?.close();
  });

  const eventsOf = async (subject: string) =>
    broker.context.deps.audit.query({ issuer: 'agents', subject, limit: 100_000 });
  const unaudited = async (type: string) => {
    const text = await (await fetch(`${broker.url}/metrics`)).text();
    const line = new RegExp(`^tasklease_refusals_unaudited_total\\{type="${type}"\\} (\\d+)$`, 'm').exec(
      text,
    );
    return Number(line?.[1] ?? 0);
  };
  const inBatches = async <T>(count: number, size: number, call: (i: number) => Promise<T>) => {
    const out: T[] = [];
    for (let start = 0; start < count; start += size)
      out.push(
        ...(await Promise.all(
          Array.from({ length: Math.min(size, count - start) }, (_, i) => call(start + i)),
        )),
      );
    return out;
  };

  it('2,000 forbidden admin calls write the budget and one refusal.limited, none of the input, then 429', async () => {
    const intruder = await broker.agents.sign({ sub: 'admin-prober' });
    const countedBefore = await unaudited('admin.call');
    const bulky = 'x'.repeat(2000);
    const answers = await inBatches(2000, 50, (i) =>
      broker.call('POST', '/v1/leases/revoke', intruder, {
        selector: { subject: `victim-${i}` },
        reason: `${bulky}-${i}`,
      }),
    );

    const statuses = answers.map((answer) => answer.status);
    expect(statuses.filter((status) => status === 403)).toHaveLength(BUDGET);
    expect(statuses.filter((status) => status === 429)).toHaveLength(2000 - BUDGET);
    const limited = answers.find((answer) => answer.status === 429)!;
    expect(limited.body).toEqual({
      error: 'too_many_refusals',
      message: `more than ${BUDGET} refused requests a minute from this identity`,
    });

    const events = await eventsOf('admin-prober');
    const calls = events.filter((event) => event.type === 'admin.call');
    expect(calls).toHaveLength(BUDGET);
    expect(events.filter((event) => event.type === 'refusal.limited')).toEqual([
      expect.objectContaining({
        issuer: 'agents',
        subject: 'admin-prober',
        detail: expect.objectContaining({ refused: 'admin.call', perMinute: BUDGET }),
      }),
    ]);
    expect(events).toHaveLength(BUDGET + 1);
    // What a caller without the role sent is not kept: no selector, no reason, nothing of its size.
    const stored = JSON.stringify(events);
    expect(stored).not.toContain('victim-');
    expect(stored).not.toContain(bulky);
    expect(stored.length / events.length).toBeLessThan(1000);
    expect(await unaudited('admin.call')).toBe(countedBefore + 2000 - BUDGET);
  });

  it('answers Retry-After with the 429, and another identity is refused and audited as before', async () => {
    const intruder = await broker.agents.sign({ sub: 'admin-prober' });
    const response = await fetch(`${broker.url}/v1/leases/revoke`, {
      method: 'POST',
      headers: { authorization: `Bearer ${intruder}`, 'content-type': 'application/json' },
      body: JSON.stringify({ selector: { subject: 'x' }, reason: 'again' }),
    });
    expect(response.status).toBe(429);
    const retryAfter = Number(response.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);

    const other = await broker.agents.sign({ sub: 'honest-mistake' });
    const refused = await broker.call('POST', '/v1/leases/revoke', other, {
      selector: { subject: 'x' },
      reason: 'oops',
    });
    expect(refused).toMatchObject({ status: 403, body: { error: 'forbidden' } });
    expect((await eventsOf('honest-mistake')).map((event) => event.type)).toEqual(['admin.call']);

    // An admin is not limited by anyone's refusals.
    const admin = await broker.admins.sign({ sub: 'oncall@example.com' });
    expect((await broker.call('GET', '/v1/leases?limit=1', admin)).status).toBe(200);
  });

  it('policy denials (task.denied, credential.denied) share the budget: a flood of them is bounded too', async () => {
    const agent = await broker.agents.sign({ sub: 'policy-prober' });
    const declared = await broker.call('POST', '/v1/tasks', agent, { purpose: 'probe', ticket: 'OPS-9' });
    expect(declared.status).toBe(201);
    const taskId = declared.body.taskId as string;

    const answers = await inBatches(300, 30, (i) =>
      i % 2 === 0
        ? broker.call('POST', '/v1/tasks', agent, { purpose: 'probe', ticket: 'DENY-1' })
        : broker.call('POST', `/v1/tasks/${taskId}/credentials`, agent, {
            grant: 'artifacts-write',
            ttlSeconds: 60,
          }),
    );
    const codes = answers.map((answer) => answer.body.error);
    expect(codes.filter((code) => code === 'policy_denied')).toHaveLength(BUDGET);
    expect(codes.filter((code) => code === 'too_many_refusals')).toHaveLength(300 - BUDGET);

    const events = await eventsOf('policy-prober');
    const denials = events.filter((e) => e.type === 'task.denied' || e.type === 'credential.denied');
    expect(denials).toHaveLength(BUDGET);
    expect(events.filter((event) => event.type === 'refusal.limited')).toHaveLength(1);

    // The budget limits refusals, not work: an allowed credential is still issued.
    const allowed = await broker.call('POST', `/v1/tasks/${taskId}/credentials`, agent, {
      grant: 'artifacts-read',
      ttlSeconds: 60,
    });
    expect(allowed.status).toBe(201);
  });
});
