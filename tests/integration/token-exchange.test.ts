import { randomUUID } from 'node:crypto';
import { decodeJwt, type JWTPayload } from 'jose';
import { startTestBroker, waitFor, type TestBroker } from '../support/broker';
import { startFakeVault } from '../support/fake-vault';
import { createTestIssuer, platformClaims, type Platform, type TestIssuer } from '../support/fixtures';
import { documentedBrokerPolicy } from '../support/vault-policy';

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_TYPE = 'urn:ietf:params:oauth:token-type:jwt';

const POLICIES = `
@id("declare")
permit(principal, action == Action::"declareTask", resource);
@id("read")
permit(principal, action == Action::"issue", resource == Grant::"artifacts-read");
@id("write-from-main")
permit(principal, action == Action::"issue", resource == Grant::"artifacts-write")
when { principal.claims has ref && principal.claims.ref == "refs/heads/main" };
`;

/** The platform's real claim set, minus what the test issuer sets (iss, aud) and with a fresh jti. */
function claimsOf(platform: Platform, extra: JWTPayload = {}): JWTPayload {
  const { iss: _iss, aud: _aud, ...claims } = platformClaims(platform);
  return { ...claims, jti: randomUUID(), ...extra };
}

/**
 * RFC 8693 at POST /v1/token, through the HTTP API with the real worker: local issuers on loopback sign
 * the claim sets GitHub Actions, GitLab, Kubernetes and SPIFFE really carry.
 */
describe('token exchange (RFC 8693): a CI job’s OIDC token in, its credentials out', () => {
  let broker: TestBroker;
  const issuers: Partial<Record<Platform, TestIssuer>> = {};

  beforeAll(async () => {
    issuers['github-actions'] = await createTestIssuer({ name: 'github', kind: 'github-actions' });
    issuers.gitlab = await createTestIssuer({ name: 'gitlab', kind: 'gitlab' });
    issuers.kubernetes = await createTestIssuer({ name: 'k8s', kind: 'kubernetes' });
    issuers['spiffe-jwt-svid'] = await createTestIssuer({ name: 'spire', kind: 'spiffe' });
    broker = await startTestBroker({
      policies: POLICIES,
      extraIssuers: Object.values(issuers),
      grants: {
        'artifacts-read': {
          provider: 'jwt',
          audience: 'https://artifacts.test',
          scopes: ['artifacts:read', 'artifacts:list'],
          maxTtlSeconds: 600,
        },
        'artifacts-write': {
          provider: 'jwt',
          audience: 'https://artifacts.test',
          scopes: ['artifacts:write'],
          maxTtlSeconds: 300,
        },
      },
    });
  });
  afterAll(async () => {
    await broker?.close();
  });

  const sign = (platform: Platform, extra: JWTPayload = {}) =>
    (issuers[platform] as TestIssuer).sign(claimsOf(platform, extra));

  /** POST /v1/token as a form (RFC 6749 §4.1.3), or as JSON. */
  async function exchange(fields: Record<string, string>, as: 'form' | 'json' = 'form') {
    const response = await fetch(`${broker.url}/v1/token`, {
      method: 'POST',
      headers: { 'content-type': as === 'form' ? 'application/x-www-form-urlencoded' : 'application/json' },
      body: as === 'form' ? new URLSearchParams(fields).toString() : JSON.stringify(fields),
    });
    return { status: response.status, headers: response.headers, body: (await response.json()) as any };
  }
  const request = (subjectToken: string, audience: string, extra: Record<string, string> = {}) => ({
    grant_type: TOKEN_EXCHANGE,
    subject_token: subjectToken,
    subject_token_type: JWT_TYPE,
    audience,
    ...extra,
  });

  it.each([
    ['github-actions', 'CI job: octo-org/octo-repo run 6123456789 attempt 2'],
    ['gitlab', 'CI job: mygroup/myproject pipeline 574 job 302'],
    ['kubernetes', 'pod: agents/planner-7d9f8c6b5-x2k4q'],
    ['spiffe-jwt-svid', 'token exchange by spiffe://example.org/ns/agents/sa/planner'],
  ] as const)('%s: exchanges a token for a credential in the job’s own task', async (platform, purpose) => {
    const token = await sign(platform);
    const answer = await exchange(request(token, 'artifacts-read'));
    expect(answer.status).toBe(200);
    expect(answer.headers.get('cache-control')).toBe('no-store');
    expect(answer.body).toMatchObject({
      issued_token_type: JWT_TYPE,
      token_type: 'Bearer',
      scope: 'artifacts:read artifacts:list',
      lease_id: expect.stringMatching(/^[0-9A-Za-z]{22}$/),
      task_id: expect.stringMatching(/^[0-9a-f]{32}$/),
    });
    expect(answer.body.expires_in).toBeGreaterThan(590);
    expect(answer.body.expires_in).toBeLessThanOrEqual(600);
    const issued = decodeJwt(answer.body.access_token);
    expect(issued).toMatchObject({
      aud: 'https://artifacts.test',
      task: answer.body.task_id,
      jti: answer.body.lease_id,
    });

    // The task says which job it was, and is the caller's own.
    const task = await broker.call('GET', `/v1/tasks/${answer.body.task_id}`, token);
    expect(task.status).toBe(200);
    expect(task.body.purpose).toBe(purpose);
    expect(task.body.leases).toHaveLength(1);
  });

  it('lands every exchange of one job in one task, and another run in another', async () => {
    const first = await exchange(request(await sign('github-actions'), 'artifacts-read'));
    // A fresh token of the same job (GitHub hands out a new one on each request): the same task.
    const second = await exchange(request(await sign('github-actions'), 'artifacts-read'));
    expect(second.body.task_id).toBe(first.body.task_id);
    const task = await broker.call('GET', `/v1/tasks/${first.body.task_id}`, await sign('github-actions'));
    expect(task.body.job).toMatchObject({
      repository: 'octo-org/octo-repo',
      run_id: '6123456789',
      run_attempt: '2',
      job_workflow_ref: 'octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main',
      sha: 'd4f6a1c0e9b8f7a6d5c4b3a2f1e0d9c8b7a6f5e4',
    });
    // The re-run (attempt 3) is another job; so is another job of the run, named by the client.
    const rerun = await exchange(
      request(await sign('github-actions', { run_attempt: '3' }), 'artifacts-read'),
    );
    const otherJob = await exchange(request(await sign('github-actions'), 'artifacts-read', { job: 'lint' }));
    expect(new Set([first.body.task_id, rerun.body.task_id, otherJob.body.task_id]).size).toBe(3);
  });

  it('a token of another job can neither read nor complete this job’s task, though its subject is the same', async () => {
    const mine = await exchange(request(await sign('gitlab'), 'artifacts-read'));
    const theirs = await sign('gitlab', { job_id: '303' });
    expect(decodeJwt(theirs).sub).toBe(decodeJwt(await sign('gitlab')).sub);
    const read = await broker.call('GET', `/v1/tasks/${mine.body.task_id}`, theirs);
    expect(read.status).toBe(404);
    const complete = await broker.call('POST', `/v1/tasks/${mine.body.task_id}/complete`, theirs, {
      outcome: 'failed',
    });
    expect(complete.status).toBe(404);
    const issue = await broker.call('POST', `/v1/tasks/${mine.body.task_id}/credentials`, theirs, {
      grant: 'artifacts-read',
    });
    expect(issue.status).toBe(404);
  });

  it('narrows scopes and refuses to widen them', async () => {
    const narrowed = await exchange(
      request(await sign('gitlab', { job_id: '401' }), 'artifacts-read', { scope: 'artifacts:read' }),
    );
    expect(narrowed.status).toBe(200);
    expect(narrowed.body.scope).toBe('artifacts:read');
    expect(decodeJwt(narrowed.body.access_token).scope).toBe('artifacts:read');

    const widened = await exchange(
      request(await sign('gitlab', { job_id: '402' }), 'artifacts-read', {
        scope: 'artifacts:read artifacts:write',
      }),
    );
    expect(widened.status).toBe(400);
    expect(widened.body).toEqual({
      error: 'invalid_scope',
      error_description: "scope may only narrow the grant's scopes; not allowed: artifacts:write",
    });
  });

  it('refuses a replayed subject token for the same grant, and still serves it for another', async () => {
    const token = await sign('github-actions', { run_id: '7000000001' });
    expect((await exchange(request(token, 'artifacts-read'))).status).toBe(200);
    const replayed = await exchange(request(token, 'artifacts-read'));
    expect(replayed.status).toBe(400);
    expect(replayed.body.error).toBe('invalid_grant');
    // artifacts-write needs ref main: the fixture's token has it.
    expect((await exchange(request(token, 'artifacts-write'))).status).toBe(200);
  });

  it('gives the token back when nothing was issued: a denied exchange does not use it up', async () => {
    const token = await sign('gitlab', { job_id: '501', ref: 'feature-x' });
    const denied = await exchange(request(token, 'artifacts-write'));
    expect(denied.status).toBe(403);
    expect(denied.body.error).toBe('policy_denied');
    // Not consumed by the denial: the same token still exchanges for a grant it may have.
    expect((await exchange(request(token, 'artifacts-read'))).status).toBe(200);
    expect((await exchange(request(token, 'artifacts-write'))).status).toBe(403);
  });

  it('completing the job’s task revokes everything the job got, and the job gets nothing more', async () => {
    const token = await sign('kubernetes', {
      'kubernetes.io': {
        ...(claimsOf('kubernetes')['kubernetes.io'] as object),
        pod: { name: 'job-x', uid: 'uid-x' },
      },
    });
    const first = await exchange(request(token, 'artifacts-read'));
    const done = await broker.call('POST', `/v1/tasks/${first.body.task_id}/complete`, token, {
      outcome: 'succeeded',
    });
    expect(done.status).toBe(200);
    expect(done.body.revokedLeases).toEqual([first.body.lease_id]);
    const admin = await broker.admins.sign({ sub: 'oncall@example.com' });
    await waitFor(async () => {
      const leases = (await broker.call('GET', `/v1/leases?task=${first.body.task_id}`, admin)).body.leases;
      return leases[0]?.state === 'revoked';
    }, 10_000);
    const after = await exchange(
      request(
        await sign('kubernetes', {
          'kubernetes.io': {
            ...(claimsOf('kubernetes')['kubernetes.io'] as object),
            pod: { name: 'job-x', uid: 'uid-x' },
          },
        }),
        'artifacts-read',
      ),
    );
    expect(after.status).toBe(409);
    expect(after.body.error).toBe('task_not_open');
  });

  it('lets exactly one of concurrent exchanges of one token win, and audits the replays', async () => {
    const token = await sign('gitlab', { job_id: '801' });
    const answers = await Promise.all(
      Array.from({ length: 8 }, () => exchange(request(token, 'artifacts-read'))),
    );
    expect(answers.map((a) => a.status).sort()).toEqual([200, 400, 400, 400, 400, 400, 400, 400]);
    const taskId = answers.find((a) => a.status === 200)?.body.task_id;
    const admin = await broker.admins.sign({ sub: 'oncall@example.com' });
    const events = (await broker.call('GET', `/v1/audit?task=${taskId}`, admin)).body.events as any[];
    const replays = events.filter((e) => e.type === 'credential.denied' && /replayed/.test(e.reason));
    expect(replays).toHaveLength(7);
  });

  it('tells GitHub jobs of one run apart by check_run_id when the token carries it', async () => {
    const jobA = await exchange(
      request(await sign('github-actions', { run_id: '9100', check_run_id: '1' }), 'artifacts-read'),
    );
    const jobB = await sign('github-actions', { run_id: '9100', check_run_id: '2' });
    expect(jobA.status).toBe(200);
    // Same run, same workflow, even the same job name: another check run is another job.
    const theirs = await exchange(request(jobB, 'artifacts-read'));
    expect(theirs.body.task_id).not.toBe(jobA.body.task_id);
    const read = await broker.call('GET', `/v1/tasks/${jobA.body.task_id}`, jobB);
    expect(read.status).toBe(404);
  });

  it.each(['constructor', '__proto__', 'toString'])(
    'refuses the audience %s: only configured grants count',
    async (audience) => {
      const answer = await exchange(request(await sign('gitlab', { job_id: '901' }), audience));
      expect(answer.status).toBe(400);
      expect(answer.body.error).toBe('invalid_target');
    },
  );

  it('accepts a JSON body as well as a form', async () => {
    const answer = await exchange(request(await sign('gitlab', { job_id: '601' }), 'artifacts-read'), 'json');
    expect(answer.status).toBe(200);
  });

  it.each([
    ['another grant_type', { grant_type: 'client_credentials' }, 'unsupported_grant_type'],
    ['no subject_token', { subject_token: '' }, 'invalid_request'],
    [
      'a subject_token_type that is not a JWT',
      { subject_token_type: 'urn:ietf:params:oauth:token-type:saml2' },
      'invalid_request',
    ],
    ['an unknown audience', { audience: 'no-such-grant' }, 'invalid_target'],
    ['a resource instead of an audience', { resource: 'https://artifacts.test' }, 'invalid_target'],
    ['an actor token (delegation)', { actor_token: 'x', actor_token_type: JWT_TYPE }, 'invalid_request'],
    ['a subject token that is not a valid token', { subject_token: 'not.a.jwt' }, 'invalid_grant'],
    [
      'a requested token type the grant does not issue',
      { requested_token_type: 'urn:ietf:params:oauth:token-type:saml2' },
      'invalid_request',
    ],
  ])('answers %s with the RFC error', async (_name, change, code) => {
    const fields = { ...request(await sign('gitlab', { job_id: '701' }), 'artifacts-read'), ...change };
    const answer = await exchange(fields);
    expect(answer.status).toBe(400);
    expect(answer.body.error).toBe(code);
    expect(Object.keys(answer.body).sort()).toEqual(['error', 'error_description']);
  });

  it('answers a malformed JSON body in the RFC’s shape', async () => {
    const response = await fetch(`${broker.url}/v1/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"grant_type":',
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toEqual({
      error: 'invalid_request',
      error_description: 'the body is not valid JSON',
    });
  });

  it('refuses a token that lacks the claims naming its job', async () => {
    const { run_attempt: _attempt, ...claims } = claimsOf('github-actions');
    const token = await (issuers['github-actions'] as TestIssuer).sign(claims);
    const answer = await exchange(request(token, 'artifacts-read'));
    expect(answer.status).toBe(400);
    expect(answer.body).toEqual({
      error: 'invalid_grant',
      error_description: 'the subject token names no job',
    });
  });
});

describe('token exchange for a credential that is not a JWT', () => {
  it('names the credential type and carries it in the documented JSON form (a Vault token)', async () => {
    const vault = await startFakeVault();
    const github = await createTestIssuer({ name: 'github', kind: 'github-actions' });
    vault.setPolicy('tasklease-broker', documentedBrokerPolicy());
    vault.setPolicy('deploy', [{ path: 'kv/deploy/*', capabilities: ['read'] }]);
    vault.addTokenRole('tasklease-deploy', { allowedPolicies: ['deploy'], orphan: true });
    const broker = await startTestBroker({
      policies: POLICIES.replace('Grant::"artifacts-read"', 'Grant::"deploy-token"'),
      extraIssuers: [github],
      grants: {
        'deploy-token': {
          provider: 'vault',
          mode: 'token',
          policies: ['deploy'],
          role: 'tasklease-deploy',
          maxTtlSeconds: 900,
        },
      },
      vault: {
        address: vault.url,
        timeoutMs: 2000,
        auth: { method: 'token', token: vault.createToken({ policies: ['tasklease-broker'] }).token },
      },
    });
    try {
      const response = await fetch(`${broker.url}/v1/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: TOKEN_EXCHANGE,
          subject_token: await github.sign(claimsOf('github-actions')),
          subject_token_type: 'urn:ietf:params:oauth:token-type:id_token',
          audience: 'deploy-token',
        }).toString(),
      });
      const body = (await response.json()) as any;
      expect(response.status).toBe(200);
      expect(body).toMatchObject({
        issued_token_type: 'urn:tasklease:params:oauth:token-type:vault-token',
        token_type: 'N_A',
        credential: { token: expect.stringMatching(/^hvs\./), accessor: expect.any(String) },
      });
      expect(JSON.parse(body.access_token)).toEqual(body.credential);
      expect(vault.token(body.credential.token)?.meta).toMatchObject({
        task: body.task_id,
        lease: body.lease_id,
      });

      // Vault down: a server-side failure answers in the RFC's shape too, never cached.
      await vault.stop();
      const down = await fetch(`${broker.url}/v1/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: TOKEN_EXCHANGE,
          subject_token: await github.sign(claimsOf('github-actions')),
          subject_token_type: JWT_TYPE,
          audience: 'deploy-token',
        }).toString(),
      });
      expect(down.status).toBe(503);
      expect(down.headers.get('cache-control')).toBe('no-store');
      expect(await down.json()).toEqual({
        error: 'unavailable',
        error_description: 'a backend the broker needs is unavailable; nothing was issued',
      });
    } finally {
      await broker.close();
      await vault.close();
    }
  });
});
