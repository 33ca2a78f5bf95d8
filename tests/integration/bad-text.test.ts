import { startTestBroker, type TestBroker } from '../support/broker';

/**
 * Free text a workload sends (purpose, ticket, ref, reason, summary) is shown later to approvers, on-call
 * engineers and logs. Text that is not text, or that would show differently from what is stored, is a 400.
 */
const BAD: [string, string][] = [
  ['a lone high surrogate', 'deploy \ud800 now'],
  ['a lone low surrogate', 'deploy \udfff now'],
  ['a C0 control (ESC, a terminal escape)', 'deploy \u001b[2J now'],
  ['a C1 control (CSI)', 'deploy \u009b2J now'],
  ['DEL', 'deploy \u007f now'],
  ['a right-to-left override', 'deploy \u202egnp.exe'],
  ['a left-to-right isolate', 'deploy \u2066x\u2069'],
  ['a right-to-left mark', 'deploy \u200f now'],
  ['the Arabic letter mark', 'deploy \u061c now'],
  ['a line separator', 'deploy\u2028approved: yes'],
  ['a paragraph separator', 'deploy\u2029approved: yes'],
];

describe('bad text from workloads', () => {
  let broker: TestBroker;
  let agent: string;
  beforeAll(async () => {
    broker = await startTestBroker({ worker: false });
    agent = await broker.agents.sign({ sub: 'text-agent' });
  });
  afterAll(() => broker.close());

  it.each(BAD)('refuses %s in purpose, ticket and ref with 400 invalid_request', async (_what, value) => {
    for (const field of ['purpose', 'ticket', 'ref']) {
      const answer = await broker.call('POST', '/v1/tasks', agent, { purpose: 'ok', [field]: value });
      expect([field, answer.status, answer.body.error]).toEqual([field, 400, 'invalid_request']);
    }
  });

  it.each(BAD)('refuses %s in a credential reason and a completion summary', async (_what, value) => {
    const task = await broker.call('POST', '/v1/tasks', agent, { purpose: 'text checks' });
    const taskId = task.body.taskId as string;
    const credential = await broker.call('POST', `/v1/tasks/${taskId}/credentials`, agent, {
      grant: 'artifacts-read',
      reason: value,
    });
    expect([credential.status, credential.body.error]).toEqual([400, 'invalid_request']);
    const completed = await broker.call('POST', `/v1/tasks/${taskId}/complete`, agent, {
      outcome: 'succeeded',
      summary: value,
    });
    expect([completed.status, completed.body.error]).toEqual([400, 'invalid_request']);
  });

  it('takes any well-formed, visible text: other scripts, emoji, a zero-width joiner', async () => {
    const purpose = 'déployer la version 2 — デプロイ 🚀 👩‍💻';
    const task = await broker.call('POST', '/v1/tasks', agent, { purpose, ticket: 'OPS-1' });
    expect(task.status).toBe(201);
    const view = await broker.call('GET', `/v1/tasks/${task.body.taskId}`, agent);
    expect(view.body.purpose).toBe(purpose);
  });
});
