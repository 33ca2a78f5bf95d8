import { startTestBroker, waitFor, type TestBroker } from '../support/broker';
import { startFakeVault, type FakeVault } from '../support/fake-vault';
import { runTasklease } from '../support/processes';
import { documentedBrokerPolicy } from '../support/vault-policy';

/** Any agent may declare tasks and take any grant: this file is about revoking them. */
const POLICIES = `
@id("declare")
permit(principal, action == Action::"declareTask", resource);
@id("issue")
permit(principal, action == Action::"issue", resource) when { principal.issuer == "agents" };
`;

const READ_LEASES = 300;
/** Control characters other than the newline that ends each line (a terminal's \r, ESC, ...). */
const controlCharacters = (text: string) =>
  [...text].filter((c) => c !== '\n' && (c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f));

/**
 * The emergency brake at scale, through the real CLI against a running broker and its worker: a fleet of a
 * few hundred JWT leases of one grant, a couple of another JWT grant, and two Vault tokens (another
 * provider), so every count per grant and per provider has one exact expected answer.
 */
describe('bulk revocation: by provider, dry run, and lease revoke --wait', () => {
  let vault: FakeVault;
  let broker: TestBroker;
  let admin: string;
  const leases = { read: [] as string[], write: [] as string[], vault: [] as string[] };
  const vaultTokens: string[] = [];

  beforeAll(async () => {
    vault = await startFakeVault();
    vault.setPolicy('tasklease-broker', documentedBrokerPolicy());
    vault.setPolicy('deploy', [{ path: 'kv/deploy/*', capabilities: ['read'] }]);
    vault.addTokenRole('tasklease-deploy', { allowedPolicies: ['deploy'], orphan: true });
    const jwtGrant = { provider: 'jwt' as const, audience: 'https://artifacts.test', maxTtlSeconds: 600 };
    broker = await startTestBroker({
      policies: POLICIES,
      grants: {
        'artifacts-read': { ...jwtGrant, scopes: ['artifacts:read'] },
        'artifacts-write': { ...jwtGrant, scopes: ['artifacts:write'] },
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
    admin = await broker.admins.sign({ sub: 'oncall@example.com' });
    const agent = await broker.agents.sign({ sub: 'fleet-agent' });
    const tasks: string[] = [];
    for (let i = 0; i < 4; i++) {
      const task = await broker.call('POST', '/v1/tasks', agent, { purpose: 'fleet', ticket: `OPS-${i}` });
      tasks.push(task.body.taskId);
    }
    const issue = async (grant: string, index: number) => {
      const issued = await broker.call(
        'POST',
        `/v1/tasks/${tasks[index % tasks.length]}/credentials`,
        agent,
        {
          grant,
        },
      );
      expect(issued.status).toBe(201);
      return issued.body;
    };
    for (let i = 0; i < READ_LEASES; i += 25) {
      const batch = await Promise.all(Array.from({ length: 25 }, (_, j) => issue('artifacts-read', i + j)));
      leases.read.push(...batch.map((body) => body.leaseId));
    }
    for (let i = 0; i < 2; i++) leases.write.push((await issue('artifacts-write', i)).leaseId);
    for (let i = 0; i < 2; i++) {
      const body = await issue('deploy-token', i);
      leases.vault.push(body.leaseId);
      vaultTokens.push(body.credential.token);
    }
  });
  afterAll(async () => {
    await broker.close();
    await vault.close();
  });

  /** lease id → state, for every lease the fleet holds. */
  const states = async (): Promise<Record<string, string>> => {
    const all: Array<{ leaseId: string; state: string }> = [];
    for (const grant of ['artifacts-read', 'artifacts-write', 'deploy-token']) {
      const listed = await broker.call('GET', `/v1/leases?grant=${grant}`, admin);
      all.push(...listed.body.leases);
    }
    return Object.fromEntries(all.map((lease) => [lease.leaseId, lease.state]));
  };
  const cli = (args: string[]) =>
    runTasklease(['lease', 'revoke', ...args], { TASKLEASE_ADDR: broker.url, TASKLEASE_TOKEN: admin });

  it('--dry-run prints the counts per grant and per provider, and changes nothing', async () => {
    const result = await cli(['--all', '--dry-run', '--reason', 'what would INC-9 take']);
    expect(result.code).toBe(0);
    const lines = result.stdout.trim().split('\n');
    expect(lines[0]).toBe(`would revoke ${READ_LEASES + 4} of ${READ_LEASES + 4} matched`);
    const rows = lines
      .slice(1)
      .filter((line) => line !== '')
      .map((line) => line.split(/\s+/));
    expect(rows).toEqual(
      expect.arrayContaining([
        ['GRANT', 'COUNT'],
        ['artifacts-read', String(READ_LEASES)],
        ['artifacts-write', '2'],
        ['deploy-token', '2'],
        ['PROVIDER', 'COUNT'],
        ['jwt', String(READ_LEASES + 2)],
        ['vault', '2'],
      ]),
    );
    expect(rows).toHaveLength(7);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(new Set(Object.values(await states()))).toEqual(new Set(['active']));
    const audit = await broker.call('GET', '/v1/audit?identity=fleet-agent', admin);
    expect(audit.body.events.map((e: { type: string }) => e.type)).not.toContain('lease.revoke_requested');
  });

  it('selector provider: revokes that backend’s leases only, in the backend itself', async () => {
    const response = await broker.call('POST', '/v1/leases/revoke', admin, {
      selector: { provider: 'vault' },
      reason: 'Vault tokens suspected leaked',
    });
    expect(response.status).toBe(200);
    expect(response.body).toMatchObject({
      matched: 2,
      revoked: 2,
      byGrant: { 'deploy-token': 2 },
      byProvider: { vault: 2 },
      revocationId: expect.stringMatching(/^[0-9a-f]{32}$/),
    });
    await waitFor(async () => {
      const now = await states();
      return leases.vault.every((id) => now[id] === 'revoked');
    }, 10_000);
    const now = await states();
    for (const id of leases.vault) expect(now[id]).toBe('revoked');
    for (const id of [...leases.read, ...leases.write]) expect(now[id]).toBe('active');
    for (const token of vaultTokens) expect(vault.token(token)).toBeUndefined();

    const progress = await broker.call('GET', `/v1/leases/revocations/${response.body.revocationId}`, admin);
    expect(progress.body).toEqual({
      revocationId: response.body.revocationId,
      total: 2,
      settled: 2,
      irrevocable: 0,
      pending: 0,
      retrying: 0,
      byState: { revoked: 2 },
      irrevocableLeaseIds: [],
    });
  });

  it(`lease revoke --grant --wait: progress on stderr, exit 0 once all ${READ_LEASES} are revoked`, async () => {
    const result = await cli(['--grant', 'artifacts-read', '--reason', 'read key rotated', '--wait']);
    expect(result.code).toBe(0);
    // Not a terminal: plain progress lines, no control characters, the last one saying where it ended.
    const progressLines = result.stderr.trim().split('\n');
    expect(progressLines.at(-1)).toBe(`revoking: ${READ_LEASES} of ${READ_LEASES} settled, 0 irrevocable`);
    for (const line of progressLines) expect(line).toMatch(/^revoking: \d+ of 300 settled, 0 irrevocable/);
    expect(controlCharacters(result.stderr)).toEqual([]);
    expect(result.stdout).toContain(`revoking ${READ_LEASES} of ${READ_LEASES} matched`);
    expect(result.stdout).toContain(`settled ${READ_LEASES} of ${READ_LEASES} (revoked ${READ_LEASES})`);
    // Exited once everything was revoked: nothing is left to wait for.
    const now = await states();
    for (const id of leases.read) expect(now[id]).toBe('revoked');
    for (const id of leases.write) expect(now[id]).toBe('active');
  });

  it('lease revoke ID --wait --json: one JSON document with where the revocation ended', async () => {
    const target = leases.write[0] as string;
    const result = await cli([target, '--reason', 'one more', '--wait', '--json']);
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({
      leaseId: target,
      state: 'revoking',
      progress: { total: 1, settled: 1, pending: 0, byState: { revoked: 1 } },
    });
    expect((await states())[target]).toBe('revoked');
  });

  it('refuses --timeout without --wait, and --wait with --dry-run, as usage errors (exit 2)', async () => {
    const timeoutAlone = await cli(['--all', '--reason', 'x', '--timeout', '5']);
    const dryWait = await cli(['--all', '--reason', 'x', '--dry-run', '--wait']);
    expect([timeoutAlone.code, dryWait.code]).toEqual([2, 2]);
    expect(timeoutAlone.stderr).toContain('--timeout goes with --wait');
    expect(dryWait.stderr).toContain('nothing to wait for');
    expect((await states())[leases.write[1] as string]).toBe('active');
  });

  it('answers 404 to an unknown revocation, 400 to a malformed id or a query', async () => {
    const unknown = await broker.call('GET', `/v1/leases/revocations/${'0'.repeat(32)}`, admin);
    expect([unknown.status, unknown.body.error]).toEqual([404, 'not_found']);
    const malformed = await broker.call('GET', '/v1/leases/revocations/not.an.id', admin);
    expect([malformed.status, malformed.body.error]).toEqual([400, 'invalid_request']);
    const query = await broker.call('GET', `/v1/leases/revocations/${'0'.repeat(32)}?all=1`, admin);
    expect([query.status, query.body.error]).toEqual([400, 'invalid_request']);
  });
});
