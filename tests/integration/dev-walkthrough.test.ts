import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { freePort, spawnTasklease, waitForHttp, type TaskleaseProcess } from '../support/processes';
import { tempDir } from '../support/fixtures';
import { waitFor } from '../support/broker';

const BIN = path.resolve(__dirname, '../../bin/tasklease.js');

/** The README's walkthrough, against a real `tasklease dev` (its own redis-server, dev issuer, keys). */
describe('tasklease dev: the five-minute walkthrough', () => {
  const cwd = tempDir('dev');
  let dev: TaskleaseProcess;
  let base: string;
  const devToken = (sub: string) =>
    execFileSync(process.execPath, [BIN, 'dev-token', '--sub', sub], { cwd, encoding: 'utf8' }).trim();
  const call = async (method: string, route: string, token: string, body?: unknown) => {
    const response = await fetch(`${base}${route}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: response.status, body: (await response.json()) as any };
  };

  beforeAll(async () => {
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    // LOG_LEVEL debug: the most a log can say, and still no secret may appear in it.
    dev = spawnTasklease(['dev'], { PORT: String(port), LOG_LEVEL: 'debug' }, { cwd });
    await waitForHttp(`${base}/readyz`, dev, 20_000);
  }, 30_000);
  afterAll(() => dev?.stop());

  it('mints tokens, allows and denies by policy, expires, waits for an approval, completes with a signed record — and logs no secret', async () => {
    const agent = devToken('my-agent');
    const admin = devToken('oncall@example.com');
    const task = await call('POST', '/v1/tasks', agent, {
      purpose: 'publish nightly report',
      ticket: 'OPS-42',
      ref: 'refs/heads/feature-x',
    });
    expect(task.status).toBe(201);
    const route = `/v1/tasks/${task.body.taskId}/credentials`;
    const shortLived = await call('POST', route, agent, { grant: 'artifacts-read', ttlSeconds: 1 });
    expect(shortLived.status).toBe(201);
    const denied = await call('POST', route, agent, { grant: 'artifacts-write' });
    expect(denied.body.error).toBe('policy_denied');

    await waitFor(async () => {
      const view = await call('GET', `/v1/tasks/${task.body.taskId}`, agent);
      return view.body.leases[0]?.state === 'expired';
    }, 5_000);

    // Step 5: the publish grant waits for the on-call admin's approval, given with the CLI.
    const asked = await call('POST', route, agent, { grant: 'artifacts-publish', reason: 'nightly report' });
    expect(asked).toMatchObject({ status: 202, body: { status: 'pending' } });
    const approved = execFileSync(
      process.execPath,
      [BIN, 'approvals', 'approve', asked.body.approvalId, '--reason', 'nightly publish is expected'],
      { cwd, encoding: 'utf8', env: { ...process.env, TASKLEASE_ADDR: base, TASKLEASE_TOKEN: admin } },
    );
    expect(approved).toContain('approved');
    const published = await call('POST', route, agent, {
      grant: 'artifacts-publish',
      approvalId: asked.body.approvalId,
    });
    expect(published.status).toBe(201);

    const second = await call('POST', route, agent, { grant: 'artifacts-read' });
    const done = await call('POST', `/v1/tasks/${task.body.taskId}/complete`, agent, {
      outcome: 'succeeded',
    });
    expect([...done.body.revokedLeases].sort()).toEqual([published.body.leaseId, second.body.leaseId].sort());
    expect(done.body.record.split('.')).toHaveLength(3);

    const listing = execFileSync(process.execPath, [BIN, 'lease', 'ls', '--task', task.body.taskId], {
      cwd,
      encoding: 'utf8',
      env: { ...process.env, TASKLEASE_ADDR: base, TASKLEASE_TOKEN: admin },
    });
    expect(listing).toMatch(/expired\s+artifacts-read/);
    await waitFor(
      async () =>
        /revoked\s+artifacts-read/.test(
          execFileSync(process.execPath, [BIN, 'lease', 'ls', '--task', task.body.taskId], {
            cwd,
            encoding: 'utf8',
            env: { ...process.env, TASKLEASE_ADDR: base, TASKLEASE_TOKEN: admin },
          }),
        ),
      3_000,
    );

    const logs = dev.output();
    expect(logs).toMatch(/policy denied/);
    const credentials = [shortLived, published, second].map((issued) => issued.body.credential.token);
    for (const secret of [agent, admin, ...credentials]) {
      expect(logs).not.toContain(secret);
      expect(logs).not.toContain(secret.split('.')[2]);
    }
  }, 30_000);
});
