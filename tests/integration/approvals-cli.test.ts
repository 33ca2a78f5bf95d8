import { existsSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import path from 'node:path';
import { decodeJwt } from 'jose';
import { startTestBroker, waitFor, type TestBroker } from '../support/broker';
import { startAlertReceiver } from '../support/flaky-backend';
import { createTestIssuer, platformClaims, tempDir, type TestIssuer } from '../support/fixtures';
import { freePort, runTasklease, spawnTasklease, type TaskleaseProcess } from '../support/processes';

const POLICIES = `
@id("declare")
permit(principal, action == Action::"declareTask", resource);
@id("issue")
permit(principal, action == Action::"issue", resource);
`;

/**
 * Step-up approvals from both ends, with the real binary: an approver's `tasklease approvals` commands, and
 * agents (`tasklease exec`, `approvals wait`) that wait for the decision instead of failing. New requests
 * reach a webhook on loopback.
 */
describe('tasklease approvals: approvers decide, agents wait', () => {
  let broker: TestBroker;
  let github: TestIssuer;
  let receiver: Server;
  let dir: string;
  const notifications: any[] = [];
  const logLines: string[] = [];
  let runId = 9_100_000_000;

  beforeAll(async () => {
    receiver = await startAlertReceiver(notifications);
    const { port } = receiver.address() as { port: number };
    github = await createTestIssuer({ name: 'github', kind: 'github-actions' });
    broker = await startTestBroker({
      policies: POLICIES,
      extraIssuers: [github],
      grants: {
        'deploy-read': {
          provider: 'jwt',
          audience: 'https://deploy.test',
          scopes: ['read'],
          maxTtlSeconds: 600,
          approval: 'required',
        },
      },
      approvals: { webhook: `http://127.0.0.1:${port}/hooks/approvals?key=s3cret` },
      logDestination: { write: (line) => logLines.push(line) },
    });
    dir = tempDir('approvals-cli');
  });
  afterAll(async () => {
    await broker?.close();
    await new Promise<void>((resolve) => receiver?.close(() => resolve()));
  });

  const approver = () => broker.admins.sign({ sub: 'approver@example.com' });
  const cli = async (args: string[], token?: string) =>
    runTasklease(['approvals', ...args], {
      TASKLEASE_ADDR: broker.url,
      TASKLEASE_TOKEN: token ?? (await approver()),
    });

  /** A declared task of agent `alpha` (or `requester`) asking for deploy-read: the 202's approval id, and how to ask again. */
  async function pendingRequest(requester?: string) {
    const agent = requester ?? (await broker.agents.sign({ sub: 'alpha' }));
    const task = await broker.call('POST', '/v1/tasks', agent, {
      purpose: 'rotate the deploy keys',
      ticket: 'OPS-42',
      ref: 'refs/heads/main',
    });
    expect(task.status).toBe(201);
    const ask = (approvalId?: string) =>
      broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
        grant: 'deploy-read',
        ttlSeconds: 300,
        reason: 'rotation runbook step 3',
        approvalId,
      });
    const pending = await ask();
    expect(pending.status).toBe(202);
    return { agent, taskId: task.body.taskId as string, approvalId: pending.body.approvalId as string, ask };
  }

  it('an approver lists, shows and approves a pending request; the agent asks again and gets its credential', async () => {
    const { taskId, approvalId, ask } = await pendingRequest();

    const listed = await cli(['ls']);
    expect(listed.code).toBe(0);
    const row = listed.stdout.split('\n').find((line) => line.startsWith(approvalId)) as string;
    expect(row).toMatch(
      /step-up\s+\d+s\s+agents\/alpha\s+deploy-read\s+300s\s+OPS-42: rotate the deploy keys\s+1[45]m/,
    );
    const json = JSON.parse((await cli(['ls', '--json'])).stdout);
    expect(json.approvals.map((a: any) => a.approvalId)).toContain(approvalId);

    const shown = await cli(['show', approvalId]);
    expect(shown.code).toBe(0);
    for (const fact of [
      /status\s+pending \(expires in/,
      /requester\s+agents\/alpha/,
      /reason\s+rotation runbook step 3/,
      /grant\s+deploy-read/,
      /ttl\s+300s/,
      new RegExp(`task\\s+${taskId} \\(open\\)`),
      /purpose\s+rotate the deploy keys/,
      /ticket\s+OPS-42/,
      /ref\s+refs\/heads\/main/,
      new RegExp(`tasklease approvals approve ${approvalId} --reason`),
    ])
      expect(shown.stdout).toMatch(fact);

    const noReason = await cli(['approve', approvalId]);
    expect(noReason.code).toBe(2);
    expect(noReason.stderr).toContain("required option '--reason <text>' not specified");
    expect((await broker.call('GET', `/v1/approvals/${approvalId}`, await approver())).body.status).toBe(
      'pending',
    );

    const approved = await cli(['approve', approvalId, '--reason', 'OPS-42 checked with the owner']);
    expect(approved.code).toBe(0);
    expect(approved.stdout).toContain(`approval ${approvalId}: approved`);

    const issued = await ask(approvalId);
    expect(issued.status).toBe(201);
    expect(decodeJwt(issued.body.credential.token)).toMatchObject({
      task: taskId,
      aud: 'https://deploy.test',
    });
    expect((await cli(['ls'])).stdout).not.toContain(approvalId);
    const used = JSON.parse((await cli(['show', approvalId, '--json'])).stdout);
    expect(used).toMatchObject({ status: 'used', leaseId: issued.body.leaseId });
  });

  it('a denial is final: the agent is refused, and deciding again prints the API’s error code', async () => {
    const { approvalId, ask } = await pendingRequest();
    const denied = await cli(['deny', approvalId, '--reason', 'no change window today', '--json']);
    expect(denied.code).toBe(0);
    expect(JSON.parse(denied.stdout)).toMatchObject({
      status: 'denied',
      decision: { reason: 'no change window today' },
    });

    const again = await cli(['approve', approvalId, '--reason', 'changed my mind']);
    expect(again.code).toBe(4);
    expect(again.stderr).toMatch(
      /^tasklease: approval_not_pending: the approval is denied; a decision is final/,
    );
    const refused = await ask(approvalId);
    expect(refused.status).toBe(403);
    expect(refused.body.error).toBe('approval_denied');
  });

  it('nobody approves their own request: the CLI prints the refusal and exits 4', async () => {
    // An admin who asked for the credential (any identity the policy lets declare a task may ask).
    const { agent: admin, approvalId } = await pendingRequest(
      await broker.admins.sign({ sub: 'oncall@example.com' }),
    );
    const own = await cli(['approve', approvalId, '--reason', 'trust me'], admin);
    expect(own.code).toBe(4);
    expect(own.stderr).toMatch(
      /^tasklease: separation_of_duties: an approval is never decided by its requester/,
    );
    const workload = await broker.agents.sign({ sub: 'alpha' });
    const notAnApprover = await cli(['approve', approvalId, '--reason', 'me neither'], workload);
    expect(notAnApprover.code).toBe(4);
    expect(notAnApprover.stderr).toMatch(/^tasklease: forbidden: /);
    expect((await broker.call('GET', `/v1/approvals/${approvalId}`, await approver())).body.status).toBe(
      'pending',
    );
  });

  it('approvals wait: exit 0 once approved, 8 when denied, 7 at its timeout', async () => {
    const approvedLater = await pendingRequest();
    // The requesting workload's own token may wait on its approval: no admin role needed.
    const waiting = spawnTasklease(['approvals', 'wait', approvedLater.approvalId, '--timeout', '60'], {
      TASKLEASE_ADDR: broker.url,
      TASKLEASE_TOKEN: approvedLater.agent,
    });
    const decided = await broker.call(
      'POST',
      `/v1/approvals/${approvedLater.approvalId}/approve`,
      await approver(),
      {
        reason: 'fine',
      },
    );
    expect(decided.status).toBe(200);
    expect(await exited(waiting)).toBe(0);
    expect(waiting.output()).toContain(
      `approval ${approvedLater.approvalId}: approved by corp/approver@example.com: fine`,
    );

    const deniedOne = await pendingRequest();
    await cli(['deny', deniedOne.approvalId, '--reason', 'not this one']);
    const denied = await cli(['wait', deniedOne.approvalId]);
    expect(denied.code).toBe(8);
    expect(denied.stdout).toContain('denied by corp/approver@example.com: not this one');

    const undecided = await pendingRequest();
    const timedOut = await cli(['wait', undecided.approvalId, '--timeout', '1']);
    expect(timedOut.code).toBe(7);
    expect(timedOut.stderr).toContain(`approval ${undecided.approvalId} still pending after 1 s`);
  });

  it('notifies the webhook once per new request, with what an approver needs and nothing secret', async () => {
    const { agent, approvalId, ask } = await pendingRequest();
    // Asking again while the request is open answers the same approval: no second notification.
    expect((await ask()).body.approvalId).toBe(approvalId);
    const received = await waitFor(async () => {
      const mine = notifications.filter((n) => n.approval?.approvalId === approvalId);
      return mine.length > 0 ? mine : null;
    }, 10_000);
    expect(received).toHaveLength(1);
    const [notification] = received;
    expect(notification).toEqual({
      event: 'tasklease.approval.requested',
      broker: 'tasklease-test',
      at: expect.any(String),
      approval: {
        approvalId,
        kind: 'step-up',
        summary: expect.stringContaining('alpha asks for deploy-read for 300s'),
        requester: { issuer: 'agents', subject: 'alpha' },
        grant: 'deploy-read',
        ttlSeconds: 300,
        reason: 'rotation runbook step 3',
        taskId: expect.any(String),
        expiresAt: expect.any(String),
      },
    });
    const text = JSON.stringify(notification);
    expect(text).not.toContain(agent);
    expect(text).not.toMatch(/[0-9a-f]{64}/);
    // The URL may carry a secret (here ?key=): the log names its host only.
    await waitFor(
      async () => logLines.some((line) => line.includes('approval request notification sent')),
      10_000,
    );
    expect(logLines.join('')).not.toContain('s3cret');
  });

  it('a webhook that cannot be reached is given up on after its retries and counted; the request stands', async () => {
    const unreachable = await startTestBroker({
      policies: POLICIES,
      grants: broker.config.grants,
      worker: false,
      approvals: { webhook: `http://127.0.0.1:${await freePort()}/nobody-listens` },
    });
    try {
      const agent = await unreachable.agents.sign({ sub: 'alpha' });
      const task = await unreachable.call('POST', '/v1/tasks', agent, { purpose: 'p', ticket: 'OPS-1' });
      const pending = await unreachable.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
        grant: 'deploy-read',
      });
      expect(pending.status).toBe(202);
      await waitFor(
        async () => {
          const metrics = await (await fetch(`${unreachable.url}/metrics`)).text();
          return /^tasklease_webhook_undelivered_total\{webhook="approvals"\} 1$/m.test(metrics);
        },
        15_000,
        250,
      );
    } finally {
      await unreachable.close();
    }
  });

  /** A token file for a fresh GitHub Actions run (its own job, so its own task). */
  async function jobTokenFile(): Promise<string> {
    const { iss: _iss, aud: _aud, ...claims } = platformClaims('github-actions');
    runId += 1;
    const file = path.join(dir, `token-${runId}`);
    writeFileSync(file, await github.sign({ ...claims, run_id: String(runId) }));
    return file;
  }
  function exec(tokenFile: string, script: string, extra: string[] = []): TaskleaseProcess {
    return spawnTasklease(
      [
        'exec',
        '--grant',
        'deploy-read',
        '--token-file',
        tokenFile,
        ...extra,
        '--',
        process.execPath,
        '-e',
        script,
      ],
      { TASKLEASE_ADDR: broker.url },
    );
  }
  const exited = (proc: TaskleaseProcess) =>
    new Promise<number | null>((resolve) => {
      if (proc.child.exitCode !== null) resolve(proc.child.exitCode);
      else proc.child.once('exit', (code) => resolve(code));
    });
  /** The approval exec announced on stderr, with the command an approver runs. */
  const announced = (proc: TaskleaseProcess) =>
    waitFor(async () => /tasklease approvals approve (\w+) --reason/.exec(proc.output())?.[1], 10_000);
  const auditOf = async (taskId: string) =>
    (
      await broker.call(
        'GET',
        `/v1/audit?task=${taskId}`,
        await broker.admins.sign({ sub: 'oncall@example.com' }),
      )
    ).body.events as any[];

  it('tasklease exec waits for the approval, runs the command with the credential, then completes its task', async () => {
    const proc = exec(
      await jobTokenFile(),
      "console.log('SEEN ' + JSON.stringify({ task: process.env.TASKLEASE_TASK, jwt: process.env.TASKLEASE_DEPLOY_READ_TOKEN }));",
    );
    const approvalId = await announced(proc);
    expect(proc.output()).toMatch(
      new RegExp(`grant deploy-read needs a step-up approval; waiting up to 15m for approval ${approvalId}`),
    );
    expect(proc.output()).not.toContain('SEEN ');
    const approved = await cli(['approve', approvalId, '--reason', 'deploy window open']);
    expect(approved.code).toBe(0);

    expect(await exited(proc)).toBe(0);
    const seen = JSON.parse(/^SEEN (.*)$/m.exec(proc.output())?.[1] ?? 'null');
    expect(decodeJwt(seen.jwt)).toMatchObject({ task: seen.task, aud: 'https://deploy.test' });
    await waitFor(async () => {
      const leases = (await broker.call('GET', `/v1/leases?task=${seen.task}`, await approver())).body.leases;
      return leases.length === 1 && leases[0].state === 'revoked';
    }, 10_000);
    expect((await auditOf(seen.task)).find((e) => e.type === 'task.completed')?.reason).toBe('succeeded');
  });

  it('tasklease exec runs nothing when the approval is denied, completes the task, and exits 8', async () => {
    const marker = path.join(dir, 'ran-after-denial');
    const proc = exec(await jobTokenFile(), `require('fs').writeFileSync(${JSON.stringify(marker)}, 'x');`);
    const approvalId = await announced(proc);
    await cli(['deny', approvalId, '--reason', 'not during the freeze']);
    expect(await exited(proc)).toBe(8);
    expect(existsSync(marker)).toBe(false);
    expect(proc.output()).toContain(
      `approval ${approvalId} denied by corp/approver@example.com: not during the freeze`,
    );
    const task = /revoking what task ([0-9a-f]{32}) already got/.exec(proc.output())?.[1] as string;
    expect(task).toBeDefined();
    await waitFor(async () => (await auditOf(task)).some((e) => e.type === 'task.completed'), 10_000);
  });

  it('tasklease exec gives up at --approval-timeout: exit 7, nothing run', async () => {
    const marker = path.join(dir, 'ran-after-timeout');
    const proc = exec(await jobTokenFile(), `require('fs').writeFileSync(${JSON.stringify(marker)}, 'x');`, [
      '--approval-timeout',
      '1',
    ]);
    expect(await exited(proc)).toBe(7);
    expect(existsSync(marker)).toBe(false);
    expect(proc.output()).toMatch(/approval \w+ still pending after 1 s; nothing was issued/);
    // exec completed its task on giving up: the request can never be used, and it must not say otherwise.
    expect(proc.output()).not.toContain('run this again to keep waiting');
    expect(proc.output()).toContain('its task is completed, so it can no longer be used');
  });
});
