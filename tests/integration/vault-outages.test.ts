import { readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type Socket } from 'node:net';
import path from 'node:path';
import type { ConfigInput } from '../../src/config/schema';
import type { VaultSettings } from '../../src/config/vault-settings';
import { startTestBroker, waitFor } from '../support/broker';
import { platformClaims, tempDir } from '../support/fixtures';
import { startFakeVault, type FakeVault } from '../support/fake-vault';
import { documentedBrokerPolicy } from '../support/vault-policy';

const POLICIES = `
@id("declare")
permit(principal, action == Action::"declareTask", resource);
@id("vault")
permit(principal, action == Action::"issue", resource) when { resource.provider == "vault" };
`;
const { iss: _iss, aud: _aud, ...gitlab } = platformClaims('gitlab');
const TLS_DIR = path.join(__dirname, '../support/tls');

const GRANTS: ConfigInput['grants'] = {
  'deploy-role': {
    provider: 'vault',
    mode: 'token',
    policies: ['deploy'],
    role: 'tasklease-deploy',
    maxTtlSeconds: 900,
  },
  'db-read': { provider: 'vault', mode: 'dynamic', path: 'database/creds/readonly', maxTtlSeconds: 900 },
};

/** A fake Vault set up as docs/vault.md says: the documented broker policy, a token role, a database role. */
async function startVault(options: { tls?: boolean } = {}): Promise<FakeVault> {
  const tls = options.tls
    ? {
        cert: readFileSync(path.join(TLS_DIR, 'vault-test.crt'), 'utf8'),
        key: readFileSync(path.join(TLS_DIR, 'vault-test.key'), 'utf8'),
      }
    : undefined;
  const vault = await startFakeVault({ tls });
  vault.setPolicy('tasklease-broker', documentedBrokerPolicy());
  vault.setPolicy('deploy', [{ path: 'kv/deploy/*', capabilities: ['read'] }]);
  vault.addTokenRole('tasklease-deploy', { allowedPolicies: ['deploy'], orphan: true });
  vault.addDatabaseRole('readonly', { defaultTtlSeconds: 3600 });
  return vault;
}

/** Outages, refusals, renewal, namespaces and TLS: each case with its own Vault and broker. */
describe('vault: outages, refusals and the broker’s own token', () => {
  const running: Array<{ close(): Promise<void> }> = [];
  afterEach(async () => {
    for (const item of running.splice(0).reverse()) await item.close();
  });

  async function startBroker(vault: FakeVault, settings: Partial<VaultSettings>) {
    const broker = await startTestBroker({
      policies: POLICIES,
      grants: GRANTS,
      vault: {
        address: vault.url,
        timeoutMs: 1000,
        auth: { method: 'token', token: vault.createToken({ policies: ['tasklease-broker'] }).token },
        ...settings,
      },
      revocation: { attempts: 3, backoffMs: 50, irrevocableRetrySeconds: 1, sweepIntervalMs: 200 },
    });
    running.push(broker);
    const agent = await broker.agents.sign(gitlab);
    const admin = await broker.admins.sign({ sub: 'oncall@example.com' });
    const declare = async () =>
      (await broker.call('POST', '/v1/tasks', agent, { purpose: 'migrate', ticket: 'OPS-9' })).body
        .taskId as string;
    const issue = (taskId: string, grant = 'deploy-role') =>
      broker.call('POST', `/v1/tasks/${taskId}/credentials`, agent, { grant, ttlSeconds: 600 });
    const complete = (taskId: string) =>
      broker.call('POST', `/v1/tasks/${taskId}/complete`, agent, { outcome: 'succeeded' });
    const lease = async (taskId: string) =>
      ((await broker.call('GET', `/v1/leases?task=${taskId}`, admin)).body.leases as any[])[0];
    const audit = async (leaseId: string) =>
      ((await broker.call('GET', `/v1/audit?lease=${leaseId}`, admin)).body.events as any[]).map(
        (e) => e.type,
      );
    return { broker, declare, issue, complete, lease, audit };
  }

  async function started(options: { tls?: boolean } = {}) {
    const vault = await startVault(options);
    running.push(vault);
    return vault;
  }

  it('Vault down at revocation: retries, goes irrevocable, and the sweeper revokes it once Vault is back', async () => {
    const vault = await started();
    const { declare, issue, complete, lease, audit } = await startBroker(vault, {});
    const taskId = await declare();
    const issued = await issue(taskId);
    expect(issued.status).toBe(201);

    await vault.stop();
    await complete(taskId);
    const stuck = await waitFor(async () => {
      const current = await lease(taskId);
      return current.state === 'irrevocable' ? current : null;
    }, 15_000);
    expect(stuck.lastError).toMatch(/unreachable: ECONNREFUSED/);
    expect(vault.token(issued.body.credential.token)).toBeDefined();

    await vault.start();
    const settled = await waitFor(async () => {
      const current = await lease(taskId);
      return current.state === 'revoked' ? current : null;
    }, 15_000);
    expect(settled.revocation).toBe('vault-revoked');
    expect(vault.token(issued.body.credential.token)).toBeUndefined();
    expect(await audit(issued.body.leaseId)).toEqual(
      expect.arrayContaining(['lease.revoke_failed', 'lease.irrevocable', 'lease.settled']),
    );
  });

  it('Vault sealed: issuance answers 503 and records nothing; revocation waits for the unseal', async () => {
    const vault = await started();
    const { declare, issue, complete, lease } = await startBroker(vault, {});
    const taskId = await declare();
    const issued = await issue(taskId, 'db-read');
    expect(issued.status).toBe(201);

    vault.seal();
    const refused = await issue(taskId, 'db-read');
    expect(refused.status).toBe(503);
    expect(refused.body.error).toBe('unavailable');
    await complete(taskId);
    const stuck = await waitFor(async () => {
      const current = await lease(taskId);
      return current.state === 'irrevocable' ? current : null;
    }, 15_000);
    expect(stuck.lastError).toContain('Vault is sealed');
    expect(vault.liveLease(issued.body.credential.leaseId)).toBe(true);

    vault.unseal();
    await waitFor(async () => (await lease(taskId)).state === 'revoked', 15_000);
    expect(vault.lease(issued.body.credential.leaseId)).toMatchObject({ revoked: true });
  });

  it('permission denied at revocation: irrevocable at once with the reason, settled once the policy is fixed', async () => {
    const vault = await started();
    // The documented policy without revoke-accessor: the mistake an operator could make.
    vault.setPolicy(
      'broker-without-revoke',
      documentedBrokerPolicy().filter((rule) => rule.path !== 'auth/token/revoke-accessor'),
    );
    const token = vault.createToken({ policies: ['broker-without-revoke'] }).token;
    const { declare, issue, complete, lease, audit } = await startBroker(vault, {
      auth: { method: 'token', token },
    });
    const taskId = await declare();
    const issued = await issue(taskId);
    expect(issued.status).toBe(201);
    vault.requests.length = 0;

    await complete(taskId);
    const stuck = await waitFor(async () => {
      const current = await lease(taskId);
      return current.state === 'irrevocable' ? current : null;
    }, 15_000);
    expect(stuck.lastError).toContain('answered 403: permission denied');
    expect(stuck.lastError).toContain('docs/vault.md');
    // At once: one attempt, no retry ladder.
    expect(await audit(issued.body.leaseId)).not.toContain('lease.revoke_failed');
    expect(vault.requests.filter((r) => r.path === 'auth/token/revoke-accessor')).toHaveLength(1);

    vault.setPolicy('broker-without-revoke', documentedBrokerPolicy());
    await waitFor(async () => (await lease(taskId)).state === 'revoked', 15_000);
    expect(vault.token(issued.body.credential.token)).toBeUndefined();
  });

  it('renews a renewable VAULT_TOKEN before it expires', async () => {
    const vault = await started();
    const token = vault.createToken({ policies: ['tasklease-broker'], ttlSeconds: 3, renewable: true });
    const { declare, issue } = await startBroker(vault, { auth: { method: 'token', token: token.token } });
    await new Promise((resolve) => setTimeout(resolve, 4_500));
    const renewals = vault.requests.filter((r) => r.path === 'auth/token/renew-self');
    expect(renewals.length).toBeGreaterThanOrEqual(1);
    expect(renewals.every((r) => r.token === token.token)).toBe(true);
    expect(vault.token(token.token)).toBeDefined();
    expect((await issue(await declare())).status).toBe(201);
  });

  it('an AppRole login token is renewed, then replaced by a fresh login at its max TTL', async () => {
    const vault = await started();
    vault.addAppRole({
      roleId: 'tasklease',
      secretId: 'the-secret-id',
      policies: ['tasklease-broker'],
      ttlSeconds: 2,
      maxTtlSeconds: 4,
    });
    const secretIdFile = path.join(tempDir('vault'), 'secret-id');
    writeFileSync(secretIdFile, 'the-secret-id');
    const { declare, issue } = await startBroker(vault, {
      auth: { method: 'approle', mount: 'approle', roleId: 'tasklease', secretIdFile },
    });
    await waitFor(
      async () => vault.requests.filter((r) => r.path === 'auth/approle/login').length >= 2,
      10_000,
    );
    const paths = vault.requests.map((r) => r.path);
    expect(paths.indexOf('auth/token/renew-self')).toBeGreaterThan(paths.indexOf('auth/approle/login'));
    expect(vault.requests.find((r) => r.path === 'auth/approle/login')?.body).toEqual({
      role_id: 'tasklease',
      secret_id: 'the-secret-id',
    });
    expect((await issue(await declare())).status).toBe(201);
  });

  it('an expired login token is replaced by a fresh login and the call goes through', async () => {
    const vault = await started();
    vault.addJwtRole({
      role: 'tasklease',
      jwt: 'header.payload.signature',
      policies: ['tasklease-broker'],
      ttlSeconds: 60,
      maxTtlSeconds: 60,
    });
    const jwtFile = path.join(tempDir('vault'), 'jwt');
    writeFileSync(jwtFile, 'header.payload.signature');
    const { declare, issue } = await startBroker(vault, {
      auth: { method: 'jwt', mount: 'jwt', role: 'tasklease', jwtFile },
    });
    const taskId = await declare();
    expect((await issue(taskId)).status).toBe(201);
    // Someone revokes the broker's token under it: the next call gets 403, logs in again, and succeeds.
    const used = vault.requests.find((r) => r.path === 'auth/token/create/tasklease-deploy')?.token as string;
    await fetch(`${vault.url}/v1/auth/token/revoke`, {
      method: 'POST',
      headers: { 'x-vault-token': vault.rootToken, 'content-type': 'application/json' },
      body: JSON.stringify({ token: used }),
    });
    expect((await issue(taskId)).status).toBe(201);
    expect(vault.requests.filter((r) => r.path === 'auth/jwt/login')).toHaveLength(2);
  });

  it('sends the namespace with every call, revocations included', async () => {
    const vault = await started();
    const token = vault.createToken({ policies: ['tasklease-broker'], namespace: 'team-a' }).token;
    const { declare, issue, complete, lease } = await startBroker(vault, {
      namespace: 'team-a',
      auth: { method: 'token', token },
    });
    const taskId = await declare();
    expect((await issue(taskId)).status).toBe(201);
    expect((await issue(taskId, 'db-read')).status).toBe(201);
    await complete(taskId);
    await waitFor(async () => (await lease(taskId)).state === 'revoked', 15_000);
    expect(vault.requests.length).toBeGreaterThan(4);
    expect(vault.requests.every((r) => r.namespace === 'team-a' && r.token === token)).toBe(true);
  });

  it('verifies Vault’s certificate against the CA bundle, and refuses to talk without it, whatever the environment says', async () => {
    // What node-vault and axios would read from the environment themselves: none of it may take effect.
    const planted = {
      VAULT_SKIP_VERIFY: '1',
      VAULT_TOKEN: 'hvs.planted-in-the-environment',
      VAULT_NAMESPACE: 'planted',
      VAULT_PREFIX: '/planted',
      HTTPS_PROXY: 'http://127.0.0.1:9',
      https_proxy: 'http://127.0.0.1:9',
    };
    const saved = Object.fromEntries(Object.keys(planted).map((key) => [key, process.env[key]]));
    Object.assign(process.env, planted);
    running.push({
      close: async () => {
        for (const [key, value] of Object.entries(saved))
          if (value === undefined) delete process.env[key];
          else process.env[key] = value;
      },
    });
    const vault = await started({ tls: true });
    expect(vault.url).toMatch(/^https:/);
    const ca = readFileSync(path.join(TLS_DIR, 'vault-test.crt'), 'utf8');
    const trusted = await startBroker(vault, { caCertPem: ca });
    expect((await trusted.issue(await trusted.declare())).status).toBe(201);
    // Straight to Vault (no proxy), with the configured token, no namespace and no path prefix.
    expect(vault.requests.length).toBeGreaterThan(0);
    expect(vault.requests.every((r) => r.token !== planted.VAULT_TOKEN && r.namespace === undefined)).toBe(
      true,
    );
    expect(vault.requests.every((r) => !r.path.startsWith('planted'))).toBe(true);

    vault.requests.length = 0;
    const untrusted = await startBroker(vault, {});
    const refused = await untrusted.issue(await untrusted.declare());
    expect(refused.status).toBe(503);
    expect(vault.requests).toEqual([]);
  });

  it('gives up on a Vault that accepts connections and never answers, after the configured timeout', async () => {
    const vault = await started();
    // A listener that takes the connection and says nothing: a hung Vault or a black-holed proxy.
    const sockets: Socket[] = [];
    const silent = createServer((socket) => void sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    running.push({
      close: () => {
        for (const socket of sockets) socket.destroy();
        return new Promise<void>((resolve) => silent.close(() => resolve()));
      },
    });
    const port = (silent.address() as { port: number }).port;
    const { declare, issue } = await startBroker(vault, {
      address: `http://127.0.0.1:${port}`,
      timeoutMs: 300,
    });
    const startedMs = Date.now();
    const refused = await issue(await declare());
    expect(refused.status).toBe(503);
    expect(refused.body.error).toBe('unavailable');
    // Bounded by the timeout (one attempt; a 403 retry does not apply), not by the HTTP client's default.
    expect(Date.now() - startedMs).toBeLessThan(5_000);
  });

  it('follows no redirect: the token and a login body never go to another address', async () => {
    const vault = await started();
    // A standby without request forwarding answers 307 to the active node; here, to another listener.
    const redirector = createHttpServer((req, res) => {
      res.writeHead(307, { location: `${vault.url}${req.url ?? '/'}` });
      res.end();
    });
    await new Promise<void>((resolve) => redirector.listen(0, '127.0.0.1', resolve));
    running.push({ close: () => new Promise<void>((resolve) => redirector.close(() => resolve())) });
    const port = (redirector.address() as { port: number }).port;
    vault.requests.length = 0;
    const { declare, issue } = await startBroker(vault, { address: `http://127.0.0.1:${port}` });
    const refused = await issue(await declare());
    expect(refused.status).toBe(503);
    expect(vault.requests).toEqual([]);
  });
});
