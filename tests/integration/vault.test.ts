import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { startTestBroker, waitFor, type TestBroker } from '../support/broker';
import { platformClaims, tempDir } from '../support/fixtures';
import { startFakeVault, type FakeVault } from '../support/fake-vault';
import { documentedBrokerPolicy } from '../support/vault-policy';

const POLICIES = `
@id("declare")
permit(principal, action == Action::"declareTask", resource);
@id("vault")
permit(principal, action == Action::"issue", resource) when { resource.provider == "vault" };
`;

/** An agent running in GitHub Actions, with the real claim set. */
const { iss: _iss, aud: _aud, ...github } = platformClaims('github-actions');

/**
 * Vault grants through the broker, the real node-vault client and a Vault-HTTP-API-compatible server
 * (tests/support/fake-vault.ts). The broker logs in by AppRole and holds exactly the policy docs/vault.md
 * gives operators, plus what its grants need.
 */
describe('vault: child tokens and dynamic secrets, revoked through Vault', () => {
  let vault: FakeVault;
  let broker: TestBroker;
  let agent: string;
  const logLines: string[] = [];
  const secretId = 'c0ffee00-secret-id-of-the-broker';

  beforeAll(async () => {
    vault = await startFakeVault();
    vault.setPolicy('tasklease-broker', documentedBrokerPolicy());
    // What this test's grants need beyond the documented policy: another engine path and a kv read.
    vault.setPolicy('tasklease-extra', [
      { path: 'database/creds/short', capabilities: ['read'] },
      { path: 'kv/*', capabilities: ['read'] },
    ]);
    vault.setPolicy('deploy', [{ path: 'kv/deploy/*', capabilities: ['read'] }]);
    vault.setPolicy('deploy-prod', [{ path: 'kv/prod/*', capabilities: ['read'] }]);
    vault.addTokenRole('tasklease-deploy', { allowedPolicies: ['deploy-prod'], orphan: true });
    vault.addTokenRole('tasklease-batch', {
      allowedPolicies: ['deploy-prod'],
      orphan: true,
      tokenType: 'batch',
    });
    vault.addDatabaseRole('readonly', { defaultTtlSeconds: 3600 });
    vault.addDatabaseRole('short', { defaultTtlSeconds: 2 });
    vault.addDatabaseRole('unlisted', { defaultTtlSeconds: 3600 });
    vault.putKv('static/api-key', { key: 'a-static-secret' });
    vault.addAppRole({
      roleId: 'tasklease',
      secretId,
      // Without a token role, the broker can only hand out policies it holds: `deploy` for deploy-token.
      policies: ['tasklease-broker', 'tasklease-extra', 'deploy'],
      ttlSeconds: 3600,
      maxTtlSeconds: 7200,
    });
    const secretIdFile = path.join(tempDir('vault'), 'secret-id');
    writeFileSync(secretIdFile, `${secretId}\n`);
    const grant = { provider: 'vault' as const, maxTtlSeconds: 900 };
    broker = await startTestBroker({
      policies: POLICIES,
      grants: {
        'deploy-token': { ...grant, mode: 'token', policies: ['deploy'], numUses: 50 },
        'deploy-role': { ...grant, mode: 'token', policies: ['deploy-prod'], role: 'tasklease-deploy' },
        'deploy-batch': { ...grant, mode: 'token', policies: ['deploy-prod'], role: 'tasklease-batch' },
        'deploy-admin': { ...grant, mode: 'token', policies: ['admin'] },
        'db-read': { ...grant, mode: 'dynamic', path: 'database/creds/readonly' },
        'db-short': { ...grant, mode: 'dynamic', path: 'database/creds/short' },
        'static-key': { ...grant, mode: 'dynamic', path: 'kv/static/api-key' },
        // A path the broker's policy does not list: Vault answers 403 with the broker's token still valid.
        'db-unlisted': { ...grant, mode: 'dynamic', path: 'database/creds/unlisted' },
      },
      vault: {
        address: vault.url,
        timeoutMs: 2000,
        auth: { method: 'approle', mount: 'approle', roleId: 'tasklease', secretIdFile },
      },
      revocation: { attempts: 3, backoffMs: 50, irrevocableRetrySeconds: 1, sweepIntervalMs: 200 },
      logDestination: { write: (line) => void logLines.push(line) },
    });
    agent = await broker.agents.sign(github);
  });
  afterAll(async () => {
    await broker?.close();
    await vault?.close();
  });

  const declare = async () => {
    const task = await broker.call('POST', '/v1/tasks', agent, {
      purpose: 'deploy the api',
      ticket: 'OPS-7',
      ref: 'refs/heads/main',
    });
    expect(task.status).toBe(201);
    return task.body.taskId as string;
  };
  const issue = (taskId: string, grant: string, ttlSeconds = 600) =>
    broker.call('POST', `/v1/tasks/${taskId}/credentials`, agent, { grant, ttlSeconds });
  const complete = (taskId: string) =>
    broker.call('POST', `/v1/tasks/${taskId}/complete`, agent, { outcome: 'succeeded' });
  const admin = () => broker.admins.sign({ sub: 'oncall@example.com' });
  const leasesOf = async (taskId: string) =>
    (await broker.call('GET', `/v1/leases?task=${taskId}`, await admin())).body.leases as any[];
  const leaseSettled = (taskId: string, leaseId: string) =>
    waitFor(async () => {
      const lease = (await leasesOf(taskId)).find((l) => l.leaseId === leaseId);
      return lease && ['revoked', 'expired'].includes(lease.state) ? lease : null;
    }, 15_000);
  /** Every value under the broker's key prefix, whatever its type, as one string. */
  const redisDump = async (target: TestBroker) => {
    const redis = target.context.redis;
    const keys = await redis.keys(`${target.prefix}*`);
    const values = await Promise.all(
      keys.map(async (key) => {
        const type = await redis.type(key);
        if (type === 'hash') return JSON.stringify(await redis.hgetall(key));
        if (type === 'string') return (await redis.get(key)) ?? '';
        if (type === 'stream') return JSON.stringify(await redis.xrange(key, '-', '+'));
        if (type === 'zset') return JSON.stringify(await redis.zrange(key, 0, -1));
        if (type === 'set') return JSON.stringify(await redis.smembers(key));
        if (type === 'list') return JSON.stringify(await redis.lrange(key, 0, -1));
        return '';
      }),
    );
    return values.join('\n');
  };
  const auditOf = async (leaseId: string) =>
    (await broker.call('GET', `/v1/audit?lease=${leaseId}`, await admin())).body.events as any[];

  it('creates a child token with exactly the grant’s policies, tied to the task, and revokes it at completion', async () => {
    const taskId = await declare();
    const issued = await issue(taskId, 'deploy-token', 600);
    expect(issued.status).toBe(201);
    const { leaseId, credential } = issued.body;
    expect(Object.keys(credential).sort()).toEqual(['accessor', 'token']);

    const token = vault.token(credential.token);
    expect(token).toMatchObject({
      accessor: credential.accessor,
      policies: ['default', 'deploy'],
      renewable: false,
      ttlSeconds: 600,
      explicitMaxTtlSeconds: 600,
      numUses: 50,
      displayName: 'token-tasklease-deploy-token',
      meta: {
        task: taskId,
        lease: leaseId,
        issuer: 'agents',
        subject: github.sub,
        ticket: 'OPS-7',
      },
    });
    // The token works as itself: it can read what `deploy` allows, and nothing of the broker's.
    const read = await fetch(`${vault.url}/v1/kv/static/api-key`, {
      headers: { 'x-vault-token': credential.token },
    });
    expect(read.status).toBe(403);

    // The lease and the audit keep the accessor, never the token.
    const [lease] = await leasesOf(taskId);
    expect(lease).toMatchObject({ leaseId, provider: 'vault', state: 'active' });
    expect(JSON.stringify(lease)).not.toContain(credential.token);
    const issuedEvent = (await auditOf(leaseId)).find((e) => e.type === 'credential.issued');
    expect(issuedEvent.detail).toMatchObject({
      provider: 'vault',
      mode: 'token',
      accessor: credential.accessor,
      // Revocation goes to the namespace recorded here ('' is the root), whatever the worker's default.
      namespace: '',
    });

    expect((await complete(taskId)).status).toBe(200);
    const settled = await leaseSettled(taskId, leaseId);
    expect(settled).toMatchObject({ state: 'revoked', revocation: 'vault-revoked' });
    expect(vault.token(credential.token)).toBeUndefined();
    const events = await auditOf(leaseId);
    expect(JSON.stringify(events)).not.toContain(credential.token);
    expect(events.find((e) => e.type === 'lease.settled').detail.revocationDetail).toContain(
      credential.accessor,
    );
  });

  it('creates tokens through a token role, as orphans that outlive the broker’s own token', async () => {
    const taskId = await declare();
    vault.requests.length = 0;
    const issued = await issue(taskId, 'deploy-role');
    expect(issued.status).toBe(201);
    expect(vault.requests.map((r) => `${r.method} ${r.path}`)).toContain(
      'POST auth/token/create/tasklease-deploy',
    );
    expect(vault.token(issued.body.credential.token)).toMatchObject({
      policies: ['default', 'deploy-prod'],
      orphan: true,
      role: 'tasklease-deploy',
    });
    await complete(taskId);
    await leaseSettled(taskId, issued.body.leaseId);
    expect(vault.token(issued.body.credential.token)).toBeUndefined();
  });

  it('reads a dynamic secret, keeps Vault’s lease id, and revokes that lease at the lease’s own expiry', async () => {
    const taskId = await declare();
    const issued = await issue(taskId, 'db-read', 2);
    expect(issued.status).toBe(201);
    const { leaseId, credential } = issued.body;
    expect(credential.leaseId).toMatch(/^database\/creds\/readonly\//);
    expect(credential.data).toEqual({ username: expect.any(String), password: expect.any(String) });
    // Vault's lease lasts an hour; tasklease's two seconds, and tasklease revokes at its own expiry.
    expect(issued.body.notAfter).toBeUndefined();
    expect(vault.liveLease(credential.leaseId)).toBe(true);

    const settled = await leaseSettled(taskId, leaseId);
    expect(settled).toMatchObject({ state: 'expired', revocation: 'vault-revoked' });
    expect(vault.lease(credential.leaseId)).toMatchObject({ revoked: true });
    expect(vault.liveLease(credential.leaseId)).toBe(false);
    const events = await auditOf(leaseId);
    expect(events.find((e) => e.type === 'credential.issued').detail.vaultLeaseId).toBe(credential.leaseId);
    expect(JSON.stringify(events)).not.toContain(credential.data.password);
  });

  it('says when Vault’s own lease ends first, and records it as expired at the source', async () => {
    const taskId = await declare();
    const issued = await issue(taskId, 'db-short', 4);
    expect(issued.status).toBe(201);
    const notAfterMs = Date.parse(issued.body.notAfter);
    expect(notAfterMs).toBeLessThan(Date.parse(issued.body.expiresAt));
    const settled = await leaseSettled(taskId, issued.body.leaseId);
    expect(settled).toMatchObject({ state: 'expired', revocation: 'expired-at-source' });
    expect(settled.revocationDetail).toContain('expired at');
  });

  it('treats a token Vault no longer knows as revoked, and the record says why', async () => {
    const taskId = await declare();
    const issued = await issue(taskId, 'deploy-role');
    // Someone revokes it in Vault first.
    const revoked = await fetch(`${vault.url}/v1/auth/token/revoke-accessor`, {
      method: 'POST',
      headers: { 'x-vault-token': vault.rootToken, 'content-type': 'application/json' },
      body: JSON.stringify({ accessor: issued.body.credential.accessor }),
    });
    expect(revoked.status).toBe(204);
    await complete(taskId);
    const settled = await leaseSettled(taskId, issued.body.leaseId);
    expect(settled).toMatchObject({ state: 'revoked', revocation: 'gone-at-source' });
    expect(settled.revocationDetail).toContain('Vault no longer knows token accessor');
    const settledEvent = (await auditOf(issued.body.leaseId)).find((e) => e.type === 'lease.settled');
    expect(settledEvent.detail.revocationDetail).toContain('revoked before its TTL outside this lease');
  });

  it('treats a dynamic lease Vault no longer knows as revoked', async () => {
    const taskId = await declare();
    const issued = await issue(taskId, 'db-read');
    await fetch(`${vault.url}/v1/sys/leases/revoke`, {
      method: 'PUT',
      headers: { 'x-vault-token': vault.rootToken, 'content-type': 'application/json' },
      body: JSON.stringify({ lease_id: issued.body.credential.leaseId }),
    });
    await complete(taskId);
    const settled = await leaseSettled(taskId, issued.body.leaseId);
    expect(settled).toMatchObject({ revocation: 'gone-at-source' });
    expect(settled.revocationDetail).toContain(`lease ${issued.body.credential.leaseId}`);
  });

  it('refuses a secret without a lease (kv): nothing could revoke it', async () => {
    const taskId = await declare();
    const refused = await issue(taskId, 'static-key');
    expect(refused.status).toBe(502);
    expect(refused.body).toEqual({
      error: 'backend_refused',
      message: 'Vault refused to issue the credential; nothing was issued',
    });
    expect(await leasesOf(taskId)).toEqual([]);
  });

  it('refuses a token role that issues batch tokens (no accessor: they could not be revoked)', async () => {
    const taskId = await declare();
    vault.requests.length = 0;
    const refused = await issue(taskId, 'deploy-batch');
    expect(refused.status).toBe(502);
    expect(refused.body.error).toBe('backend_refused');
    expect(await leasesOf(taskId)).toEqual([]);
    // Vault itself refuses: the broker always sets explicit_max_ttl, which a batch token cannot have.
    expect(logLines.join('')).toContain('batch tokens cannot have');
  });

  it('answers 502 when Vault refuses a policy the broker may not hand out, and records nothing', async () => {
    const taskId = await declare();
    const refused = await issue(taskId, 'deploy-admin');
    expect(refused.status).toBe(502);
    expect(refused.body.error).toBe('backend_refused');
    expect(await leasesOf(taskId)).toEqual([]);
    expect(logLines.join('')).toContain('child policies must be subset of parent');
  });

  it('answers 502 for a path the broker’s policy lacks, without logging the broker in again', async () => {
    const taskId = await declare();
    const logins = () => vault.requests.filter((r) => r.path === 'auth/approle/login').length;
    const before = logins();
    for (let i = 0; i < 3; i++) {
      const refused = await issue(taskId, 'db-unlisted');
      expect(refused.status).toBe(502);
      expect(refused.body.error).toBe('backend_refused');
    }
    // Each 403 was checked against the broker's own token (still valid): no new login, no churned token.
    expect(logins()).toBe(before);
    expect(vault.requests.filter((r) => r.path === 'auth/token/lookup-self').length).toBeGreaterThanOrEqual(
      3,
    );
  });

  it('retries a revocation the secrets engine failed (Vault answers 400), instead of giving up at once', async () => {
    const taskId = await declare();
    const issued = await issue(taskId, 'db-read');
    vault.failNext('sys/leases/revoke', 400, [
      '1 error occurred:\n\t* failed to revoke entry: resp: (*logical.Response)(nil) err: dial tcp 127.0.0.1:5432: connect: connection refused\n\n',
    ]);
    await complete(taskId);
    const settled = await leaseSettled(taskId, issued.body.leaseId);
    expect(settled).toMatchObject({ state: 'revoked', revocation: 'vault-revoked' });
    const types = (await auditOf(issued.body.leaseId)).map((e) => e.type);
    expect(types).toContain('lease.revoke_failed');
    expect(types).not.toContain('lease.irrevocable');
    expect(vault.liveLease(issued.body.credential.leaseId)).toBe(false);
  });

  it('calls Vault only ever as the broker: every call but the login carries the broker’s own token', async () => {
    const taskId = await declare();
    vault.requests.length = 0;
    const agentTokens: string[] = [];
    for (const grant of ['deploy-token', 'deploy-role', 'db-read']) {
      const issued = await issue(taskId, grant);
      expect(issued.status).toBe(201);
      if (issued.body.credential.token) agentTokens.push(issued.body.credential.token);
    }
    await complete(taskId);
    await waitFor(async () => (await leasesOf(taskId)).every((l) => l.state === 'revoked'), 15_000);
    const calls = vault.requests.filter((r) => r.path !== 'auth/approle/login');
    expect(calls.map((r) => r.path)).toEqual(
      expect.arrayContaining(['auth/token/create', 'auth/token/revoke-accessor', 'sys/leases/revoke']),
    );
    const used = new Set(calls.map((r) => r.token));
    expect(used.size).toBe(1);
    const [brokerToken] = [...used];
    expect(agentTokens).not.toContain(brokerToken);
    expect(vault.token(brokerToken as string)?.policies).toContain('tasklease-broker');
  });

  it('never writes a token, a password or the AppRole secret id to the log or to Redis', async () => {
    const taskId = await declare();
    const token = (await issue(taskId, 'deploy-token')).body.credential.token;
    const data = (await issue(taskId, 'db-read')).body.credential.data;
    await complete(taskId);
    await waitFor(async () => (await leasesOf(taskId)).every((l) => l.state === 'revoked'), 15_000);
    const brokerTokens = vault.requests.map((r) => r.token).filter((t): t is string => Boolean(t));
    const log = logLines.join('');
    expect(log).toContain('vault: broker logged in');
    // Everything the broker keeps in Redis: leases, tasks, the audit stream, the queue's jobs.
    const stored = await redisDump(broker);
    expect(stored).toContain(taskId);
    for (const secret of [token, data.password, secretId, ...new Set(brokerTokens)]) {
      expect(log).not.toContain(secret);
      expect(stored).not.toContain(secret);
    }
  });
});
