import { execFile } from 'node:child_process';
import { GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { fromProcess } from '@aws-sdk/credential-provider-process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { startTestBroker, waitFor, type TestBroker } from '../support/broker';
import { platformClaims, tempDir } from '../support/fixtures';
import { spawnTasklease } from '../support/processes';
import { startMoto, type Moto } from '../support/moto';

const POLICIES = `
@id("declare")
permit(principal, action == Action::"declareTask", resource);
@id("aws")
permit(principal, action == Action::"issue", resource) when { resource.provider == "aws-sts" };
`;

/** An agent running in GitHub Actions: its token carries the real claim set, `repository` among them. */
const { iss: _iss, aud: _aud, ...github } = platformClaims('github-actions');

describe('aws-sts: task-scoped STS sessions, revoked by a per-session deny', () => {
  let moto: Moto;
  let broker: TestBroker;
  let agent: string;
  let role: { arn: string; roleId: string };
  let bulkRole: { arn: string; roleId: string };

  beforeAll(async () => {
    moto = await startMoto();
    role = await moto.createRole('reports-writer');
    bulkRole = await moto.createRole('bulk-reader');
    broker = await startTestBroker({
      policies: POLICIES,
      grants: {
        // A role in another account: the broker could assume it but never deny its sessions.
        'foreign-read': {
          provider: 'aws-sts',
          roleArn: 'arn:aws:iam::999999999999:role/reports-reader',
          endpoint: moto.endpoint,
          iamEndpoint: moto.endpoint,
          maxTtlSeconds: 3600,
        },
        'bulk-read': {
          provider: 'aws-sts',
          roleArn: bulkRole.arn,
          endpoint: moto.endpoint,
          iamEndpoint: moto.endpoint,
          maxTtlSeconds: 3600,
        },
        'bulk-read-approved': {
          provider: 'aws-sts',
          roleArn: bulkRole.arn,
          endpoint: moto.endpoint,
          iamEndpoint: moto.endpoint,
          maxTtlSeconds: 3600,
          approval: 'required',
        },
        'reports-write': {
          provider: 'aws-sts',
          roleArn: role.arn,
          endpoint: moto.endpoint,
          iamEndpoint: moto.endpoint,
          maxTtlSeconds: 3600,
          externalId: 'tasklease-test',
          sessionPolicy: {
            Version: '2012-10-17',
            Statement: [
              {
                Effect: 'Allow',
                Action: ['s3:GetObject', 's3:PutObject'],
                Resource: 'arn:aws:s3:::reports/${identity.claims.repository}/${task.ticket}/*',
              },
              {
                Effect: 'Allow',
                Action: 's3:ListBucket',
                Resource: 'arn:aws:s3:::reports',
                Condition: { StringLike: { 's3:prefix': '${aws:PrincipalTag/task}/*' } },
              },
            ],
          },
        },
      },
      revocation: { attempts: 3, backoffMs: 50, irrevocableRetrySeconds: 1, sweepIntervalMs: 200 },
    });
    agent = await broker.agents.sign(github);
  });
  afterAll(async () => {
    await broker?.close();
    await moto?.close();
  });

  const declare = async (fields: Record<string, unknown> = {}) => {
    const task = await broker.call('POST', '/v1/tasks', agent, {
      purpose: 'publish the nightly report',
      ticket: 'OPS-42',
      ref: 'refs/heads/main',
      ...fields,
    });
    expect(task.status).toBe(201);
    return task.body.taskId as string;
  };
  const issue = (taskId: string, body: Record<string, unknown> = {}) =>
    broker.call('POST', `/v1/tasks/${taskId}/credentials`, agent, { grant: 'reports-write', ...body });
  const issueMany = async (taskId: string, count: number, body: Record<string, unknown>) => {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const issued = await issue(taskId, body);
      expect(issued.status).toBe(201);
      ids.push(issued.body.leaseId);
    }
    return ids;
  };
  const complete = (taskId: string) =>
    broker.call('POST', `/v1/tasks/${taskId}/complete`, agent, { outcome: 'succeeded' });
  const admin = () => broker.admins.sign({ sub: 'oncall@example.com' });
  const leasesOf = async (taskId: string) =>
    (await broker.call('GET', `/v1/leases?task=${taskId}`, await admin())).body.leases as any[];
  const settled = (taskId: string, count: number) =>
    waitFor(async () => {
      const leases = await leasesOf(taskId);
      return leases.length === count && leases.every((l) => ['revoked', 'expired'].includes(l.state))
        ? leases
        : null;
    }, 20_000);
  const deniedSessions = async () =>
    ((await moto.denyPolicy('reports-writer'))?.Statement ?? []).flatMap(
      (s) => s.Condition?.StringEquals?.['aws:userid'] ?? [],
    ) as string[];

  it('mints a session named after the lease, with the rendered policy, tags and source identity', async () => {
    const taskId = await declare();
    await moto.recorded();
    const issued = await issue(taskId, { ttlSeconds: 1200 });
    expect(issued.status).toBe(201);
    const { leaseId, credential } = issued.body;
    expect(issued.body).toMatchObject({ provider: 'aws-sts', grant: 'reports-write' });
    expect(Object.keys(credential).sort()).toEqual([
      'accessKeyId',
      'expiration',
      'secretAccessKey',
      'sessionToken',
    ]);
    // 1,200 s is above STS's minimum: the session ends with the lease (give or take the call's latency).
    expect(issued.body.notAfter).toBe(credential.expiration);
    expect(Math.abs(Date.parse(credential.expiration) - Date.parse(issued.body.expiresAt))).toBeLessThan(
      2_000,
    );

    // The keys work, and STS sees them as this lease's session of the role.
    const sts = new STSClient({
      region: 'us-east-1',
      endpoint: moto.endpoint,
      credentials: {
        accessKeyId: credential.accessKeyId,
        secretAccessKey: credential.secretAccessKey,
        sessionToken: credential.sessionToken,
      },
    });
    const caller = await sts.send(new GetCallerIdentityCommand({}));
    sts.destroy();
    expect(caller.Arn).toBe(`arn:aws:sts::123456789012:assumed-role/reports-writer/tl-${leaseId}`);
    expect(caller.UserId).toBe(`${role.roleId}:tl-${leaseId}`);

    // What the broker sent to STS (moto does not echo it back): read from moto's request recorder.
    const assume = (await moto.recorded()).find((form) => form.get('Action') === 'AssumeRole');
    expect(assume).toBeDefined();
    expect(assume?.get('RoleArn')).toBe(role.arn);
    expect(assume?.get('RoleSessionName')).toBe(`tl-${leaseId}`);
    expect(assume?.get('DurationSeconds')).toBe('1200');
    expect(assume?.get('ExternalId')).toBe('tasklease-test');
    // The subject `repo:octo-org/octo-repo:environment:prod`, in STS's character set, with a hash of the original.
    expect(assume?.get('SourceIdentity')).toMatch(/^repo-octo-org-octo-repo-environment-prod\.[0-9a-f]{10}$/);
    const tags = Object.fromEntries(
      [1, 2, 3].map((i) => [assume?.get(`Tags.member.${i}.Key`), assume?.get(`Tags.member.${i}.Value`)]),
    );
    expect(tags).toEqual({ task: taskId, lease: leaseId, ticket: 'OPS-42' });
    const policy = JSON.parse(assume?.get('Policy') ?? '{}');
    expect(policy.Statement[0].Resource).toBe(`arn:aws:s3:::reports/${github.repository}/OPS-42/*`);
    // IAM's own variables are not ours to fill: they reach STS untouched.
    expect(policy.Statement[1].Condition.StringLike['s3:prefix']).toBe('${aws:PrincipalTag/task}/*');
  });

  it.each([
    ['a double quote', 'OPS-1"}],"Effect":"Allow'],
    ['braces', 'OPS-{1}'],
    ['a wildcard', 'OPS-*'],
    ['a policy variable', 'OPS-${aws:username}'],
    ['a space', 'OPS 1'],
  ])('refuses a ticket holding %s before anything reaches STS', async (_label, ticket) => {
    const taskId = await declare({ ticket });
    await moto.recorded();
    const refused = await issue(taskId);
    expect(refused.status).toBe(400);
    expect(refused.body.error).toBe('placeholder_rejected');
    expect(refused.body.message).toContain('${task.ticket}');
    expect((await moto.recorded()).filter((form) => form.get('Action') === 'AssumeRole')).toEqual([]);
    expect(await leasesOf(taskId)).toEqual([]);
  });

  it("refuses a role outside the broker's account, whose sessions it could not revoke", async () => {
    const taskId = await declare();
    await moto.recorded();
    const refused = await issue(taskId, { grant: 'foreign-read' });
    expect(refused.status).toBe(502);
    expect(refused.body).toEqual({
      error: 'backend_refused',
      message: 'AWS STS refused to issue the session; nothing was issued',
    });
    expect((await moto.recorded()).filter((form) => form.get('Action') === 'AssumeRole')).toEqual([]);
    expect(await leasesOf(taskId)).toEqual([]);
  });

  it('refuses a newline in the ticket at declaration already', async () => {
    const refused = await broker.call('POST', '/v1/tasks', agent, {
      purpose: 'x',
      ticket: 'OPS-1\n{"Effect":"Allow"}',
    });
    expect(refused.status).toBe(400);
    expect(refused.body.error).toBe('invalid_request');
  });

  it('refuses a task without the ticket the session policy needs', async () => {
    const taskId = await declare({ ticket: undefined });
    const refused = await issue(taskId);
    expect(refused.status).toBe(400);
    expect(refused.body).toMatchObject({ error: 'placeholder_rejected' });
  });

  it('completing the task writes a deny for exactly its session', async () => {
    const other = await declare();
    const untouched = await issue(other);
    const taskId = await declare();
    const issued = await issue(taskId, { ttlSeconds: 1800 });
    expect(issued.status).toBe(201);
    const completed = await broker.call('POST', `/v1/tasks/${taskId}/complete`, agent, {
      outcome: 'succeeded',
    });
    expect(completed.status).toBe(200);
    const [lease] = await settled(taskId, 1);
    expect(lease).toMatchObject({ state: 'revoked', revocation: 'deny-applied' });
    expect(lease.revocationDetail).toMatch(/IAM applies it within seconds/);
    expect(lease.revocationDetail).toContain(`${role.roleId}:tl-${issued.body.leaseId}`);

    const denied = await deniedSessions();
    expect(denied).toContain(`${role.roleId}:tl-${issued.body.leaseId}`);
    expect(denied).not.toContain(`${role.roleId}:tl-${untouched.body.leaseId}`);
    const statement = (await moto.denyPolicy('reports-writer'))?.Statement.find((s) =>
      s.Condition?.StringEquals?.['aws:userid']?.includes(`${role.roleId}:tl-${issued.body.leaseId}`),
    );
    expect(statement).toMatchObject({ Effect: 'Deny', Action: '*', Resource: '*' });

    const audit = await broker.call('GET', `/v1/audit?lease=${issued.body.leaseId}`, await admin());
    const settledEvent = audit.body.events.find((e: any) => e.type === 'lease.settled');
    expect(settledEvent.detail).toMatchObject({ revocation: 'deny-applied' });
    const issuedEvent = audit.body.events.find((e: any) => e.type === 'credential.issued');
    expect(issuedEvent.detail).toMatchObject({
      sessionId: `${role.roleId}:tl-${issued.body.leaseId}`,
      accessKeyId: issued.body.credential.accessKeyId,
    });
    expect(JSON.stringify(audit.body)).not.toContain(issued.body.credential.secretAccessKey);
    expect(JSON.stringify(audit.body)).not.toContain(issued.body.credential.sessionToken);
  });

  it('a lease shorter than STS allows: notAfter says when the session dies, and the broker denies it at the lease end', async () => {
    const taskId = await declare();
    const issued = await issue(taskId, { ttlSeconds: 2 });
    expect(issued.status).toBe(201);
    const expiresAt = Date.parse(issued.body.expiresAt);
    const notAfter = Date.parse(issued.body.notAfter);
    expect(notAfter - expiresAt).toBeGreaterThan(890_000);
    expect(issued.body.credential.expiration).toBe(issued.body.notAfter);
    const [lease] = await settled(taskId, 1);
    expect(lease).toMatchObject({ state: 'expired', revocation: 'deny-applied' });
    expect(await deniedSessions()).toContain(`${role.roleId}:tl-${issued.body.leaseId}`);
  });

  it('50 concurrent revocations on one role all end up in the policy', async () => {
    const taskId = await declare();
    const leaseIds: string[] = [];
    for (let i = 0; i < 50; i++) {
      const issued = await issue(taskId, { ttlSeconds: 1800 });
      expect(issued.status).toBe(201);
      leaseIds.push(issued.body.leaseId);
    }
    await moto.recorded();
    await broker.call('POST', `/v1/tasks/${taskId}/complete`, agent, { outcome: 'succeeded' });
    const leases = await settled(taskId, 50);
    expect(leases.every((l) => l.revocation === 'deny-applied')).toBe(true);
    const denied = new Set(await deniedSessions());
    expect(leaseIds.filter((id) => !denied.has(`${role.roleId}:tl-${id}`))).toEqual([]);
    // One read-modify-write covers every revocation queued meanwhile: far fewer writes than revocations.
    const writes = (await moto.recorded()).filter((form) => form.get('Action') === 'PutRolePolicy');
    expect(writes.length).toBeGreaterThan(0);
    expect(writes.length).toBeLessThan(50);
  });

  it('IAM down mid-revocation: retries, then irrevocable; IAM back: the sweeper finishes the job', async () => {
    const taskId = await declare();
    const issued = await issue(taskId, { ttlSeconds: 1800 });
    await moto.stop();
    try {
      await broker.call('POST', `/v1/tasks/${taskId}/complete`, agent, { outcome: 'failed' });
      const stuck = await waitFor(async () => {
        const [lease] = await leasesOf(taskId);
        return lease?.state === 'irrevocable' ? lease : null;
      }, 20_000);
      expect(stuck.attempts).toBeGreaterThanOrEqual(3);
      expect(stuck.lastError).toMatch(/ECONNREFUSED|connect/i);
    } finally {
      // moto keeps no state across a restart: the roles come back as they would be in AWS (new role ids).
      await moto.start();
    }
    const session = `${role.roleId}:tl-${issued.body.leaseId}`;
    role = await moto.createRole('reports-writer');
    bulkRole = await moto.createRole('bulk-reader');
    const [lease] = await settled(taskId, 1);
    expect(lease).toMatchObject({ state: 'revoked', revocation: 'deny-applied' });
    expect(await deniedSessions()).toContain(session);
  });

  it("at IAM's size limit, falls back to a time cut-off for the role and records that in the lease and the audit", async () => {
    const bulk = { grant: 'bulk-read', ttlSeconds: 1800 };
    // 150 sessions fit in the 10,240 characters IAM allows a role's inline policies (about 200 do).
    const first = await declare();
    await issueMany(first, 150, bulk);
    await complete(first);
    expect((await settled(first, 150)).every((l) => l.revocation === 'deny-applied')).toBe(true);
    const listed = await moto.denyPolicy('bulk-reader');
    expect(JSON.stringify(listed).replace(/\s/g, '').length).toBeLessThanOrEqual(10_240);

    // 100 more do not: every session of the role issued before the cut-off is denied instead.
    const second = await declare();
    await issueMany(second, 100, bulk);
    await complete(second);
    const cut = await settled(second, 100);
    // Those written while the list still had room are listed by name (how many depends on how the 100 are
    // batched); the rest get the cut-off, which then replaces the list and covers them all.
    const byName = cut.filter((l) => l.revocation === 'deny-applied');
    const cutOff = cut.filter((l) => l.revocation === 'deny-applied-role-cutoff');
    expect(cutOff.length).toBeGreaterThan(0);
    expect(byName.length + cutOff.length).toBe(100);
    expect(cutOff[0].revocationDetail).toMatch(/every session of the role issued before .* is denied/);
    const policy = await moto.denyPolicy('bulk-reader');
    const cutoff = policy?.Statement.find((statement) => /^TaskleaseCutoff\d+$/.test(statement.Sid));
    expect(cutoff).toMatchObject({ Effect: 'Deny', Action: '*', Resource: '*' });
    const cutoffMs = Date.parse(cutoff.Condition.DateLessThan['aws:TokenIssueTime']);
    // Just after the last listed session's issue time (STS's clock), never before now.
    expect(cutoffMs).toBeLessThanOrEqual(Date.now() + 2_500);
    expect(JSON.stringify(policy).replace(/\s/g, '').length).toBeLessThanOrEqual(10_240);
    const audit = await broker.call('GET', `/v1/audit?lease=${cutOff[0].leaseId}`, await admin());
    expect(audit.body.events.find((e: any) => e.type === 'lease.settled').detail).toMatchObject({
      revocation: 'deny-applied-role-cutoff',
    });

    // A session issued after the cut-off is listed by name again.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, cutoffMs - Date.now() + 1_100)));
    const third = await declare();
    const [later] = await issueMany(third, 1, bulk);
    await complete(third);
    expect((await settled(third, 1))[0].revocation).toBe('deny-applied');
    const after = await moto.denyPolicy('bulk-reader');
    expect(after?.Statement.flatMap((s) => s.Condition?.StringEquals?.['aws:userid'] ?? [])).toEqual([
      `${bulkRole.roleId}:tl-${later}`,
    ]);
  });

  it('prunes a denied session from the policy once it has expired anyway', async () => {
    const provider = broker.context.deps.providers.get('aws-sts');
    const taskId = await declare();
    const [short] = await issueMany(taskId, 1, { ttlSeconds: 900 });
    const [long] = await issueMany(taskId, 1, { ttlSeconds: 3600 });
    const shortLease = await broker.context.deps.leases.get(short as string);
    const longLease = await broker.context.deps.leases.get(long as string);
    expect(await provider?.revoke(shortLease!, { nowMs: Date.now() })).toMatchObject({
      revocation: 'deny-applied',
    });
    // The role id as STS has it now (an earlier test restarted moto and recreated the role).
    const roleId = shortLease!.handle.sessionId!.split(':')[0];
    expect(await deniedSessions()).toContain(`${roleId}:tl-${short}`);
    // Revoking the other one after the first session's own expiry: the first is dropped, not kept forever.
    // Past it by more than the minute kept for clock skew between the broker and AWS.
    const later = Number(shortLease!.handle.notAfterMs) + 61_000;
    expect(await provider?.revoke(longLease!, { nowMs: later })).toMatchObject({
      revocation: 'deny-applied',
    });
    const denied = await deniedSessions();
    expect(denied).toContain(`${roleId}:tl-${long}`);
    expect(denied).not.toContain(`${roleId}:tl-${short}`);
  });

  it('tasklease credential-process feeds an unmodified AWS SDK a task-scoped session', async () => {
    const taskId = await declare();
    const dir = tempDir('aws-config');
    const bin = path.resolve(__dirname, '../../bin/tasklease.js');
    const command = [
      'env',
      `TASKLEASE_ADDR=${broker.url}`,
      `TASKLEASE_TOKEN=${agent}`,
      `TASKLEASE_TASK=${taskId}`,
      `TASKLEASE_CACHE_DIR=${dir}/cache`,
      process.execPath,
      bin,
      'credential-process',
      '--grant',
      'bulk-read',
      '--ttl',
      '300',
    ].join(' ');
    writeFileSync(path.join(dir, 'config'), `[profile tasklease]\ncredential_process = ${command}\n`);
    writeFileSync(path.join(dir, 'credentials'), '');
    const credentials = fromProcess({
      profile: 'tasklease',
      configFilepath: path.join(dir, 'config'),
      filepath: path.join(dir, 'credentials'),
    });
    const sts = new STSClient({ region: 'us-east-1', endpoint: moto.endpoint, credentials });
    const caller = await sts.send(new GetCallerIdentityCommand({}));
    sts.destroy();
    // The SDK is told the lease's end (5 minutes), not the session's (15), so it never uses the keys past it.
    const first = await credentials();
    expect(first.expiration!.getTime() - Date.now()).toBeLessThanOrEqual(300_000);
    // SDKs ask again on every call in the last minutes before that: the cached session answers, no new lease.
    const again = await credentials();
    expect(again.accessKeyId).toBe(first.accessKeyId);
    const leases = await leasesOf(taskId);
    expect(leases).toHaveLength(1);
    expect(caller.Arn).toBe(`arn:aws:sts::123456789012:assumed-role/bulk-reader/tl-${leases[0].leaseId}`);
  });

  it('tasklease credential-process exchanges a CI job’s own token when no task is named', async () => {
    const dir = tempDir('aws-job');
    // A Kubernetes-style projected token file; `agents` is an oidc issuer, so the token itself is the job.
    const tokenFile = path.join(dir, 'token');
    writeFileSync(tokenFile, await broker.agents.sign({ ...github, jti: `job-${Date.now()}` }));
    const run = () =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        execFile(
          process.execPath,
          [
            path.resolve(__dirname, '../../bin/tasklease.js'),
            'credential-process',
            '--grant',
            'bulk-read',
            '--token-file',
            tokenFile,
          ],
          {
            env: {
              PATH: process.env.PATH ?? '',
              TASKLEASE_ADDR: broker.url,
              TASKLEASE_CACHE_DIR: `${dir}/cache`,
            },
          },
          (error, stdout, stderr) =>
            resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
        );
      });
    const admin = await broker.admins.sign({ sub: 'oncall@example.com' });
    const bulkLeases = async () =>
      ((await broker.call('GET', '/v1/leases?grant=bulk-read&limit=1000', admin)).body.leases as any[])
        .length;
    const before = await bulkLeases();
    const first = await run();
    expect(first).toMatchObject({ code: 0, stderr: '' });
    const printed = JSON.parse(first.stdout);
    expect(printed).toMatchObject({ Version: 1, AccessKeyId: expect.stringMatching(/^ASIA/) });
    // Asked again (as SDKs do before expiry): the cached session, not a second exchange of the same token.
    const second = await run();
    expect(second.code).toBe(0);
    expect(JSON.parse(second.stdout).AccessKeyId).toBe(printed.AccessKeyId);
    expect(await bulkLeases()).toBe(before + 1);
  });

  it('tasklease credential-process in a declared task waits for a step-up approval, then prints the session', async () => {
    const taskId = await declare();
    const proc = spawnTasklease(
      ['credential-process', '--grant', 'bulk-read-approved', '--ttl', '900', '--no-cache'],
      { TASKLEASE_ADDR: broker.url, TASKLEASE_TOKEN: agent, TASKLEASE_TASK: taskId },
    );
    const approvalId = await waitFor(
      async () => /tasklease approvals approve (\w+) --reason/.exec(proc.output())?.[1],
      10_000,
    );
    expect(proc.output()).not.toContain('AccessKeyId');
    const approver = await broker.admins.sign({ sub: 'approver@example.com' });
    const approved = await broker.call('POST', `/v1/approvals/${approvalId}/approve`, approver, {
      reason: 'bulk export for OPS ticket',
    });
    expect(approved.status).toBe(200);
    await new Promise((resolve) => proc.child.once('exit', resolve));
    expect(proc.child.exitCode).toBe(0);
    const printed = JSON.parse(/^\{.*\}$/m.exec(proc.output())?.[0] ?? 'null');
    expect(printed).toMatchObject({ Version: 1, AccessKeyId: expect.stringMatching(/^ASIA/) });
    const leases = await leasesOf(taskId);
    expect(leases.map((lease: any) => lease.grant)).toEqual(['bulk-read-approved']);
  });
});
