import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { CreateRoleCommand, GetRolePolicyCommand, IAMClient } from '@aws-sdk/client-iam';
import { freePort } from '../../src/wiring/local-redis';
import { tempDir } from './fixtures';

export const MOTO_MISSING =
  "moto_server is not installed; the AWS tests run against it. Install it with: pip install 'moto[server]'";

/** Fails (never skips) when moto_server is missing, with the command that installs it. */
export function assertMotoInstalled(): void {
  const probe = spawnSync('moto_server', ['--help'], { stdio: 'ignore' });
  if (probe.error || probe.status !== 0) throw new Error(MOTO_MISSING);
}

export interface Moto {
  endpoint: string;
  iam: IAMClient;
  /** Stops the server (SIGKILL: as abrupt as an outage). */
  stop(): Promise<void>;
  /** Starts it again on the same port. moto keeps no state across a restart. */
  start(): Promise<void>;
  /** Creates a role whose trust policy lets anyone assume it with tags and a source identity. */
  createRole(name: string): Promise<{ arn: string; roleId: string }>;
  /** The broker's inline deny policy of a role, parsed; undefined when there is none. */
  denyPolicy(roleName: string, policyName?: string): Promise<{ Statement: any[] } | undefined>;
  /** Requests moto received since the last call (its recorder), as decoded form bodies. */
  recorded(): Promise<URLSearchParams[]>;
  close(): Promise<void>;
}

/**
 * A moto_server of the test's own on a free loopback port, in a temp dir (its recorder writes there), with
 * its recorder on so a test can read exactly what the broker sent to STS and IAM.
 */
export async function startMoto(): Promise<Moto> {
  assertMotoInstalled();
  const port = await freePort();
  const dir = tempDir('moto');
  const endpoint = `http://127.0.0.1:${port}`;
  let child: ChildProcess | null = null;
  const credentials = { accessKeyId: 'testing', secretAccessKey: 'testing' };
  const iam = new IAMClient({ region: 'us-east-1', endpoint, credentials, maxAttempts: 1 });

  const start = async () => {
    child = spawn('moto_server', ['-H', '127.0.0.1', '-p', String(port)], {
      cwd: dir,
      env: { ...process.env, MOTO_RECORDER_FILEPATH: `${dir}/recording` },
      stdio: 'ignore',
    });
    const deadline = Date.now() + 20_000;
    for (;;) {
      const up = await fetch(`${endpoint}/moto-api/recorder/start-recording`, { method: 'POST' }).then(
        (r) => r.ok,
        () => false,
      );
      if (up) return;
      if (child.exitCode !== null) throw new Error(`moto_server exited with ${child.exitCode}`);
      if (Date.now() > deadline) throw new Error('moto_server did not start within 20 s');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  const stop = async () => {
    const running = child;
    child = null;
    if (!running || running.exitCode !== null) return;
    const exited = new Promise((resolve) => running.once('exit', resolve));
    running.kill('SIGKILL');
    await exited;
  };
  await start();

  return {
    endpoint,
    iam,
    start,
    stop,
    async createRole(name) {
      const trust = {
        Version: '2012-10-17',
        Statement: [
          {
            Effect: 'Allow',
            Principal: { AWS: 'arn:aws:iam::123456789012:root' },
            Action: ['sts:AssumeRole', 'sts:TagSession', 'sts:SetSourceIdentity'],
          },
        ],
      };
      const answer = await iam.send(
        new CreateRoleCommand({ RoleName: name, AssumeRolePolicyDocument: JSON.stringify(trust) }),
      );
      return { arn: answer.Role?.Arn ?? '', roleId: answer.Role?.RoleId ?? '' };
    },
    async denyPolicy(roleName, policyName = 'tasklease-revoked-sessions') {
      try {
        const answer = await iam.send(
          new GetRolePolicyCommand({ RoleName: roleName, PolicyName: policyName }),
        );
        return JSON.parse(decodeURIComponent(answer.PolicyDocument ?? '')) as { Statement: any[] };
      } catch (error) {
        if ((error as Error).name === 'NoSuchEntityException') return undefined;
        throw error;
      }
    },
    async recorded() {
      const text = await (await fetch(`${endpoint}/moto-api/recorder/download-recording`)).text();
      await fetch(`${endpoint}/moto-api/recorder/reset-recording`, { method: 'POST' });
      await fetch(`${endpoint}/moto-api/recorder/start-recording`, { method: 'POST' });
      return text
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as { body?: string; body_encoded?: boolean })
        .map(
          (entry) =>
            new URLSearchParams(
              entry.body_encoded ? Buffer.from(entry.body ?? '', 'base64').toString() : (entry.body ?? ''),
            ),
        );
    },
    async close() {
      iam.destroy();
      await stop();
    },
  };
}
