import { startFakeVault, type FakeVault } from '../support/fake-vault';

/** The fake's own contract, over plain fetch: the shapes and rules the broker's tests rely on. */
describe('fake Vault', () => {
  let vault: FakeVault;
  beforeAll(async () => {
    vault = await startFakeVault();
  });
  afterAll(() => vault.close());

  async function call(method: string, path: string, token?: string, body?: unknown, namespace?: string) {
    const headers: Record<string, string> = { 'Content-Type': 'application/json' };
    if (token) headers['X-Vault-Token'] = token;
    if (namespace) headers['X-Vault-Namespace'] = namespace;
    const init = { method, headers, body: body === undefined ? undefined : JSON.stringify(body) };
    const res = await fetch(`${vault.url}/v1/${path}`, init);
    const json: any = res.status === 204 ? undefined : await res.json();
    return { status: res.status, body: json };
  }
  const denied = { status: 403, body: { errors: ['1 error occurred:\n\t* permission denied\n\n'] } };

  it('mints child tokens by Vault rules and revokes them, and their leases, with the parent', async () => {
    vault.setPolicy('broker', [
      { path: 'auth/token/create', capabilities: ['update'] },
      { path: 'database/creds/+', capabilities: ['read'] },
    ]);
    vault.addDatabaseRole('app', { defaultTtlSeconds: 60 });
    const broker = vault.createToken({ policies: ['broker'], ttlSeconds: 600 });

    const escalation = await call('POST', 'auth/token/create', broker.token, { policies: ['admin'] });
    expect(escalation).toEqual({
      status: 400,
      body: { errors: ['child policies must be subset of parent'] },
    });
    const created = await call('POST', 'auth/token/create', broker.token, {
      ttl: '5m',
      display_name: 'task 1',
    });
    expect(created.body).toMatchObject({ lease_id: '', data: null, warnings: null, mount_type: 'token' });
    const child = created.body.auth;
    expect(child).toMatchObject({ policies: ['broker', 'default'], lease_duration: 300, orphan: false });
    expect(child.client_token).toMatch(/^hvs\.\w{24}$/);

    const self = await call('GET', 'auth/token/lookup-self', child.client_token);
    expect(self.body.data).toMatchObject({
      display_name: 'token-task-1',
      path: 'auth/token/create',
      ttl: 300,
    });
    const creds = await call('GET', 'database/creds/app', child.client_token);
    expect(creds.body).toMatchObject({ lease_duration: 60, renewable: true, mount_type: 'database' });
    expect(creds.body.data.username).toMatch(/^v-token-app-/);
    expect(vault.liveLease(creds.body.lease_id)).toBe(true);

    expect(
      await call('POST', 'auth/token/revoke-accessor', vault.rootToken, { accessor: broker.accessor }),
    ).toEqual({
      status: 204,
      body: undefined,
    });
    expect(vault.token(child.client_token)).toBeUndefined();
    expect(vault.lease(creds.body.lease_id)).toMatchObject({ revoked: true });
    expect(
      (await call('POST', 'auth/token/revoke-accessor', vault.rootToken, { accessor: broker.accessor }))
        .status,
    ).toBe(204);
    const lookup = await call('POST', 'auth/token/lookup-accessor', vault.rootToken, {
      accessor: broker.accessor,
    });
    expect(lookup).toEqual({ status: 400, body: { errors: ['invalid accessor'] } });
    const lease = await call('PUT', 'sys/leases/lookup', vault.rootToken, { lease_id: creds.body.lease_id });
    expect(lease).toEqual({ status: 400, body: { errors: ['invalid lease'] } });
  });

  it('enforces ACLs, namespaces and num_uses, and answers sealed and injected failures', async () => {
    vault.putKv('team/config', { region: 'eu' });
    vault.setPolicy('reader', [
      { path: 'kv/*', capabilities: ['read'] },
      { path: 'kv/team/secret', capabilities: ['deny'] },
    ]);
    const reader = vault.createToken({ policies: ['reader'] });
    const read = await call('GET', 'kv/team/config', reader.token);
    expect(read.body).toMatchObject({ lease_id: '', lease_duration: 2764800, data: { region: 'eu' } });
    expect(await call('GET', 'kv/team/secret', reader.token)).toEqual(denied);
    expect(await call('GET', 'kv/missing', reader.token)).toEqual({ status: 404, body: { errors: [] } });
    expect(await call('GET', 'kv/team/config', 'hvs.not-a-token')).toEqual(denied);

    const scoped = vault.createToken({ policies: ['reader'], namespace: 'team-a' });
    expect(await call('GET', 'kv/team/config', scoped.token)).toEqual(denied);
    expect((await call('GET', 'kv/team/config', scoped.token, undefined, 'team-a')).status).toBe(200);

    const once = await call('POST', 'auth/token/create', vault.rootToken, {
      policies: ['reader'],
      num_uses: 1,
    });
    expect((await call('GET', 'kv/team/config', once.body.auth.client_token)).status).toBe(200);
    expect(await call('GET', 'kv/team/config', once.body.auth.client_token)).toEqual(denied);

    vault.addAppRole({
      roleId: 'r',
      secretId: 's',
      policies: ['reader'],
      ttlSeconds: 60,
      maxTtlSeconds: 120,
    });
    const login = await call('POST', 'auth/approle/login', undefined, { role_id: 'r', secret_id: 's' });
    expect(login.body.auth).toMatchObject({
      policies: ['default', 'reader'],
      lease_duration: 60,
      orphan: true,
    });
    const wrong = await call('POST', 'auth/approle/login', undefined, { role_id: 'r', secret_id: 'x' });
    expect(wrong).toEqual({ status: 400, body: { errors: ['invalid role or secret ID'] } });

    vault.failNext('kv/team/config', 500, ['boom'], 2);
    expect(await call('GET', 'kv/team/config', reader.token)).toEqual({
      status: 500,
      body: { errors: ['boom'] },
    });
    expect((await call('GET', 'kv/team/config', reader.token)).status).toBe(500);
    vault.seal();
    const sealed = await call('GET', 'kv/team/config', reader.token);
    expect(sealed).toEqual({ status: 503, body: { errors: ['Vault is sealed'] } });
    vault.unseal();
    expect(vault.requests.at(-1)).toMatchObject({
      method: 'GET',
      path: 'kv/team/config',
      token: reader.token,
    });
  });
});
