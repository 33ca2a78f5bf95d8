import { existsSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage } from 'node:http';
import path from 'node:path';
import { decodeJwt } from 'jose';
import { startTestBroker, waitFor, type TestBroker } from '../support/broker';
import { startFakeVault, type FakeVault } from '../support/fake-vault';
import { createTestIssuer, platformClaims, tempDir, type TestIssuer } from '../support/fixtures';
import { spawnTasklease, type TaskleaseProcess } from '../support/processes';
import { documentedBrokerPolicy } from '../support/vault-policy';

const POLICIES = `
@id("declare")
permit(principal, action == Action::"declareTask", resource);
@id("issue")
permit(principal, action == Action::"issue", resource) when { principal.issuer == "github" };
`;

/**
 * `tasklease exec` as a CI job runs it: the real binary, a GitHub Actions token in a file, the broker over
 * loopback, the command a real child process. Credentials must die with the command, whatever its end.
 */
describe('tasklease exec: a command with the job’s credentials, revoked when it exits', () => {
  let broker: TestBroker;
  let vault: FakeVault;
  let github: TestIssuer;
  let dir: string;
  let runId = 8_000_000_000;

  beforeAll(async () => {
    vault = await startFakeVault();
    vault.setPolicy('tasklease-broker', documentedBrokerPolicy());
    vault.setPolicy('deploy', [{ path: 'kv/deploy/*', capabilities: ['read'] }]);
    vault.addTokenRole('tasklease-deploy', { allowedPolicies: ['deploy'], orphan: true });
    github = await createTestIssuer({ name: 'github', kind: 'github-actions' });
    broker = await startTestBroker({
      policies: POLICIES,
      extraIssuers: [github],
      grants: {
        'artifacts-read': {
          provider: 'jwt',
          audience: 'https://artifacts.test',
          scopes: ['read'],
          maxTtlSeconds: 600,
        },
        'spare-read': {
          provider: 'jwt',
          audience: 'https://spare.test',
          scopes: ['read'],
          maxTtlSeconds: 600,
        },
        'deploy-token': {
          provider: 'vault',
          mode: 'token',
          policies: ['deploy'],
          role: 'tasklease-deploy',
          maxTtlSeconds: 600,
        },
      },
      vault: {
        address: vault.url,
        timeoutMs: 2000,
        auth: { method: 'token', token: vault.createToken({ policies: ['tasklease-broker'] }).token },
      },
    });
    dir = tempDir('exec');
  });
  afterAll(async () => {
    await broker?.close();
    await vault?.close();
  });

  /** A token file for a fresh GitHub Actions run (each run is its own job, so its own task). */
  async function jobTokenFile(): Promise<string> {
    const { iss: _iss, aud: _aud, ...claims } = platformClaims('github-actions');
    runId += 1;
    const file = path.join(dir, `token-${runId}`);
    writeFileSync(file, await github.sign({ ...claims, run_id: String(runId) }));
    return file;
  }

  /** `tasklease exec` running `node -e script`; the script's stdout is in the process output. */
  function exec(grants: string[], tokenFile: string, script: string): TaskleaseProcess {
    const args = ['exec', ...grants.flatMap((grant) => ['--grant', grant]), '--token-file', tokenFile];
    return spawnTasklease([...args, '--', process.execPath, '-e', script], { TASKLEASE_ADDR: broker.url });
  }
  const exited = (proc: TaskleaseProcess) =>
    new Promise<number | null>((resolve) => {
      if (proc.child.exitCode !== null) resolve(proc.child.exitCode);
      else proc.child.once('exit', (code) => resolve(code));
    });
  const admin = () => broker.admins.sign({ sub: 'oncall@example.com' });
  const taskOf = async (taskId: string) => {
    const leases = (await broker.call('GET', `/v1/leases?task=${taskId}`, await admin())).body
      .leases as any[];
    return leases;
  };
  /** The task's one lease ends revoked, and the task was completed with `outcome`. */
  async function expectRevoked(task: string, outcome: string) {
    await waitFor(async () => {
      const leases = await taskOf(task);
      return leases.length === 1 && leases[0].state === 'revoked';
    }, 10_000);
    const audit = (await broker.call('GET', `/v1/audit?task=${task}`, await admin())).body.events as any[];
    expect(audit.find((e) => e.type === 'task.completed')?.reason).toBe(outcome);
  }
  /** The task id and credentials the command saw, printed by the script as one JSON line. */
  const seen = (proc: TaskleaseProcess) => JSON.parse(/^SEEN (.*)$/m.exec(proc.output())?.[1] ?? 'null');
  const PRINT =
    "console.log('SEEN ' + JSON.stringify({ task: process.env.TASKLEASE_TASK, " +
    'jwt: process.env.TASKLEASE_ARTIFACTS_READ_TOKEN, vault: process.env.VAULT_TOKEN }));';

  it('runs the command with the credentials, then completes the task: every credential revoked', async () => {
    const proc = exec(['artifacts-read', 'deploy-token'], await jobTokenFile(), `${PRINT} process.exit(0);`);
    expect(await exited(proc)).toBe(0);
    const { task, jwt, vault: vaultToken } = seen(proc);
    expect(decodeJwt(jwt)).toMatchObject({ task, aud: 'https://artifacts.test' });
    expect(vaultToken).toMatch(/^hvs\./);
    const leases = await waitFor(async () => {
      const current = await taskOf(task);
      return current.length === 2 && current.every((l) => l.state === 'revoked') ? current : null;
    }, 10_000);
    expect(leases.map((l) => l.grant).sort()).toEqual(['artifacts-read', 'deploy-token']);
    expect(vault.token(vaultToken)).toBeUndefined();
    const audit = (await broker.call('GET', `/v1/audit?task=${task}`, await admin())).body.events as any[];
    expect(audit.find((e) => e.type === 'task.completed')?.reason).toBe('succeeded');
  });

  it('keeps the command’s exit code, and revokes on failure too', async () => {
    const proc = exec(['artifacts-read'], await jobTokenFile(), `${PRINT} process.exit(3);`);
    expect(await exited(proc)).toBe(3);
    await expectRevoked(seen(proc).task, 'failed');
  });

  it('forwards SIGTERM to the command, and revokes when it has gone', async () => {
    const proc = exec(
      ['artifacts-read'],
      await jobTokenFile(),
      `${PRINT} setInterval(() => undefined, 1000);`,
    );
    await waitFor(async () => proc.output().includes('SEEN '), 10_000);
    proc.child.kill('SIGTERM');
    // The command had no handler: SIGTERM ended it, and tasklease reports it as a shell would.
    expect(await exited(proc)).toBe(143);
    await expectRevoked(seen(proc).task, 'cancelled');
  });

  it('runs nothing when a grant cannot be had, and revokes what was already issued', async () => {
    const marker = path.join(dir, 'ran');
    const proc = exec(
      ['artifacts-read', 'no-such-grant'],
      await jobTokenFile(),
      `require('fs').writeFileSync(${JSON.stringify(marker)}, 'x');`,
    );
    expect(await exited(proc)).toBe(4);
    expect(proc.output()).toContain('invalid_target');
    expect(existsSync(marker)).toBe(false);
    const task = /revoking what task ([0-9a-f]{32}) already got/.exec(proc.output())?.[1] as string;
    expect(task).toBeDefined();
    const leases = await waitFor(async () => {
      const current = await taskOf(task);
      return current.length === 1 && current[0].state === 'revoked' ? current : null;
    }, 10_000);
    expect(leases[0].grant).toBe('artifacts-read');
  });

  it('runs two execs in one job, each its own task, both revoked', async () => {
    const file = await jobTokenFile();
    const first = exec(['artifacts-read'], file, `${PRINT} process.exit(0);`);
    expect(await exited(first)).toBe(0);
    // A later step of the same job, with the job's next token (GitHub hands out a fresh one per request).
    const { iss: _iss, aud: _aud, ...claims } = platformClaims('github-actions');
    writeFileSync(file, await github.sign({ ...claims, run_id: String(runId), jti: 'second-step' }));
    const second = exec(['artifacts-read'], file, `${PRINT} process.exit(0);`);
    expect(await exited(second)).toBe(0);
    const [a, b] = [seen(first).task, seen(second).task];
    expect(a).not.toBe(b);
    for (const task of [a, b])
      await waitFor(async () => {
        const leases = await taskOf(task);
        return leases.length === 1 && leases[0].state === 'revoked';
      }, 10_000);
  });

  it('exits 127 when the command cannot be started, and still revokes', async () => {
    const proc = spawnTasklease(
      [
        'exec',
        '--grant',
        'spare-read',
        '--token-file',
        await jobTokenFile(),
        '--',
        path.join(dir, 'no-such-command'),
      ],
      { TASKLEASE_ADDR: broker.url },
    );
    expect(await exited(proc)).toBe(127);
    expect(proc.output()).toContain('cannot run');
    const admin = await broker.admins.sign({ sub: 'oncall@example.com' });
    await waitFor(async () => {
      const leases = (await broker.call('GET', '/v1/leases?grant=spare-read&limit=100', admin)).body
        .leases as any[];
      return leases.length === 1 && leases[0].state === 'revoked';
    }, 10_000);
  });

  it('refuses to run without a grant', async () => {
    const marker = path.join(dir, 'ran-without-grant');
    const proc = spawnTasklease(
      [
        'exec',
        '--token-file',
        await jobTokenFile(),
        '--',
        process.execPath,
        '-e',
        `require('fs').writeFileSync(${JSON.stringify(marker)}, 'x')`,
      ],
      { TASKLEASE_ADDR: broker.url },
    );
    expect(await exited(proc)).toBe(1);
    expect(proc.output()).toContain('give at least one --grant');
    expect(existsSync(marker)).toBe(false);
  });

  /**
   * A loopback proxy in front of the broker that holds chosen calls for `holdMs` before passing them on:
   * the window in which a test sends signals.
   */
  async function slowProxy(hold: (req: IncomingMessage, body: string) => boolean, holdMs: number) {
    const held: string[] = [];
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', async () => {
        if (hold(req, body)) {
          held.push(req.url ?? '');
          await new Promise((resolve) => setTimeout(resolve, holdMs));
        }
        const answer = await fetch(`${broker.url}${req.url}`, {
          method: req.method,
          headers: Object.fromEntries(
            Object.entries(req.headers).filter(
              ([name]) => !['host', 'content-length', 'connection'].includes(name),
            ),
          ) as Record<string, string>,
          body: req.method === 'GET' ? undefined : body,
        });
        res.writeHead(answer.status, {
          'content-type': answer.headers.get('content-type') ?? 'application/json',
        });
        res.end(await answer.text());
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    return { url, held, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
  }

  it('a CI cancel (SIGINT, then SIGTERM) while completing cannot stop the revocation or change the exit status', async () => {
    const proxy = await slowProxy((req) => (req.url ?? '').endsWith('/complete'), 1500);
    try {
      const args = ['exec', '--grant', 'artifacts-read', '--token-file', await jobTokenFile()];
      const proc = spawnTasklease([...args, '--', process.execPath, '-e', `${PRINT} process.exit(5);`], {
        TASKLEASE_ADDR: proxy.url,
      });
      await waitFor(async () => proxy.held.length > 0, 10_000);
      proc.child.kill('SIGINT');
      proc.child.kill('SIGTERM');
      expect(await exited(proc)).toBe(5);
      await expectRevoked(seen(proc).task, 'failed');
    } finally {
      await proxy.close();
    }
  });

  it('a signal while exchanging runs nothing, revokes what was issued, and exits as the signal', async () => {
    const proxy = await slowProxy(
      (req, body) => req.url === '/v1/token' && body.includes('audience=spare-read'),
      1500,
    );
    const marker = path.join(dir, 'ran-after-signal');
    try {
      const args = [
        'exec',
        '--grant',
        'artifacts-read',
        '--grant',
        'spare-read',
        '--token-file',
        await jobTokenFile(),
      ];
      const script = `require('fs').writeFileSync(${JSON.stringify(marker)}, 'x')`;
      const proc = spawnTasklease([...args, '--', process.execPath, '-e', script], {
        TASKLEASE_ADDR: proxy.url,
      });
      await waitFor(async () => proxy.held.length > 0, 10_000);
      proc.child.kill('SIGTERM');
      expect(await exited(proc)).toBe(143);
      expect(existsSync(marker)).toBe(false);
      const task = /revoking what task ([0-9a-f]{32}) already got/.exec(proc.output())?.[1] as string;
      await waitFor(async () => {
        const leases = await taskOf(task);
        return leases.length === 2 && leases.every((l) => l.state === 'revoked');
      }, 10_000);
    } finally {
      await proxy.close();
    }
  });
});
