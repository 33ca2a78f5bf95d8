import { generateKeyPair, SignJWT } from 'jose';
import { startTestBroker, waitFor, type TestBroker } from '../support/broker';

/**
 * RFC 7662 introspection and RFC 7009 revocation of broker-issued JWTs, with form-encoded bodies as OAuth
 * clients send them.
 */
describe('introspection (RFC 7662) and holder revocation (RFC 7009)', () => {
  let broker: TestBroker;
  let agent: string;
  let resourceServer: string;
  let admin: string;
  beforeAll(async () => {
    broker = await startTestBroker();
    agent = await broker.agents.sign({ sub: 'planner' });
    resourceServer = await broker.admins.sign({ sub: 'artifacts-api' });
    admin = await broker.admins.sign({ sub: 'oncall@example.com' });
  });
  afterAll(() => broker.close());

  const form = async (route: string, token: string | null, fields: Record<string, string>) => {
    const response = await fetch(`${broker.url}${route}`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      body: new URLSearchParams(fields).toString(),
    });
    const text = await response.text();
    return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : undefined };
  };
  const introspect = (credential: string, caller = resourceServer) =>
    form('/v1/introspect', caller, { token: credential });

  /** A fresh task and one artifacts-read JWT in it. */
  const issue = async (ttlSeconds = 300) => {
    const task = await broker.call('POST', '/v1/tasks', agent, { purpose: 'introspection', ticket: 'OPS-3' });
    expect(task.status).toBe(201);
    const issued = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
      grant: 'artifacts-read',
      ttlSeconds,
    });
    expect(issued.status).toBe(201);
    return {
      taskId: task.body.taskId as string,
      leaseId: issued.body.leaseId as string,
      token: issued.body.credential.token as string,
    };
  };
  const leaseOf = async (taskId: string, leaseId: string) => {
    const view = await broker.call('GET', `/v1/tasks/${taskId}`, agent);
    return view.body.leases.find((lease: { leaseId: string }) => lease.leaseId === leaseId);
  };

  it('tells a resource server that a live credential is active, with its claims, and is never cached', async () => {
    const { taskId, leaseId, token } = await issue(300);
    const response = await introspect(token);
    expect(response.status).toBe(200);
    expect(response.headers.get('cache-control')).toBe('no-store');
    expect(response.body).toMatchObject({
      active: true,
      sub: 'planner',
      aud: 'https://artifacts.test',
      scope: 'artifacts:read',
      jti: leaseId,
      task: taskId,
      grant: 'artifacts-read',
    });
    const nowSeconds = Date.now() / 1000;
    expect(response.body.exp).toBeGreaterThan(nowSeconds + 290);
    expect(response.body.exp).toBeLessThanOrEqual(nowSeconds + 301);
  });

  it('answers an admin the same way', async () => {
    const { leaseId, token } = await issue();
    const response = await introspect(token, admin);
    expect(response.status).toBe(200);
    expect(response.body).toMatchObject({
      active: true,
      jti: leaseId,
      sub: 'planner',
      grant: 'artifacts-read',
    });
  });

  it('refuses a plain workload (403 forbidden) and an anonymous caller (401), revealing nothing', async () => {
    const { token } = await issue();
    const byWorkload = await introspect(token, agent);
    expect(byWorkload.status).toBe(403);
    expect(byWorkload.body).toEqual({ error: 'forbidden', message: expect.any(String) });
    const viewer = await broker.admins.sign({ sub: 'viewer@example.com' });
    // A viewer holds `view`, which introspection accepts.
    expect((await introspect(token, viewer)).body.active).toBe(true);

    const anonymous = await form('/v1/introspect', null, { token });
    expect(anonymous.status).toBe(401);
    expect(anonymous.body).toEqual({ error: 'unauthenticated', message: expect.any(String) });
    expect(JSON.stringify(anonymous.body)).not.toContain('planner');
  });

  it('answers 400 when the form has no token', async () => {
    const response = await form('/v1/introspect', resourceServer, { token_type_hint: 'access_token' });
    expect(response.status).toBe(400);
    expect(response.body.error).toBe('invalid_request');
  });

  it('says {active: false} — and nothing more — for garbage, a foreign signature, or an identity token', async () => {
    const { leaseId, taskId } = await issue();
    const { privateKey } = await generateKeyPair('ES256');
    // Same claims and header as a real credential, for a live lease, but signed by a key that is not the broker's.
    const forged = await new SignJWT({ task: taskId, scope: 'artifacts:read' })
      .setProtectedHeader({ alg: 'ES256', kid: broker.signingKeys.active.kid, typ: 'at+jwt' })
      .setIssuer('tasklease-test')
      .setSubject('planner')
      .setAudience('https://artifacts.test')
      .setJti(leaseId)
      .setIssuedAt()
      .setExpirationTime('5m')
      .sign(privateKey);
    for (const token of ['garbage', 'a.b.c', forged, agent]) {
      const response = await introspect(token);
      expect(response.status).toBe(200);
      expect(response.body).toEqual({ active: false });
      expect(response.headers.get('cache-control')).toBe('no-store');
    }
  });

  it('says {active: false} once a credential has expired', async () => {
    const { token } = await issue(1);
    expect((await introspect(token)).body.active).toBe(true);
    await waitFor(async () => (await introspect(token)).body.active === false, 4_000, 100);
    expect(await introspect(token).then((r) => r.body)).toEqual({ active: false });
  });

  it('lets the holder revoke its own credential: 200, inactive at once, lease revoked by denylisting', async () => {
    const { taskId, leaseId, token } = await issue(300);
    const other = await issue(300);

    const revoked = await form('/v1/revoke', null, { token, token_type_hint: 'access_token' });
    expect(revoked.status).toBe(200);
    // Immediately, before the worker settles the lease.
    expect((await introspect(token)).body).toEqual({ active: false });
    // Only that credential: another one stays live.
    expect((await introspect(other.token)).body.active).toBe(true);

    const lease = await waitFor(async () => {
      const found = await leaseOf(taskId, leaseId);
      return found?.state === 'revoked' ? found : null;
    }, 3_000);
    expect(lease.revocation).toBe('jwt-denylisted');
    expect(lease.revokeReason).toMatch(/holder/);
    expect((await introspect(token)).body).toEqual({ active: false });
    // Revoking again is harmless.
    expect((await form('/v1/revoke', null, { token })).status).toBe(200);
  });

  it('answers 200 to /v1/revoke whatever the token was (RFC 7009 §2.2) and changes nothing', async () => {
    const { token } = await issue();
    for (const junk of ['garbage', 'a.b.c', agent]) {
      const response = await form('/v1/revoke', null, { token: junk });
      expect(response.status).toBe(200);
    }
    expect((await introspect(token)).body.active).toBe(true);
  });

  it('says {active: false} after the task is completed', async () => {
    const { taskId, token } = await issue(300);
    expect((await introspect(token)).body.active).toBe(true);
    const done = await broker.call('POST', `/v1/tasks/${taskId}/complete`, agent, { outcome: 'succeeded' });
    expect(done.status).toBe(200);
    expect((await introspect(token)).body).toEqual({ active: false });
  });
});

describe('introspection bound to audiences', () => {
  it('a resource server sees only tokens minted for its own audiences', async () => {
    const broker = await startTestBroker({
      resourceServers: [
        { issuer: 'corp', subjects: ['artifacts-api'], audiences: ['https://artifacts.test'] },
        { issuer: 'corp', subjects: ['billing-api'], audiences: ['https://billing.test'] },
      ],
    });
    try {
      const agent = await broker.agents.sign({ sub: 'aud-agent' });
      const task = await broker.call('POST', '/v1/tasks', agent, { purpose: 'aud', ticket: 'OPS-11' });
      const issued = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
        grant: 'artifacts-read',
      });
      const introspect = async (sub: string) => {
        const response = await fetch(`${broker.url}/v1/introspect`, {
          method: 'POST',
          headers: {
            authorization: `Bearer ${await broker.admins.sign({ sub })}`,
            'content-type': 'application/x-www-form-urlencoded',
          },
          body: new URLSearchParams({ token: issued.body.credential.token }),
        });
        return (await response.json()) as { active: boolean; aud?: string };
      };
      expect(await introspect('artifacts-api')).toMatchObject({
        active: true,
        aud: 'https://artifacts.test',
      });
      expect(await introspect('billing-api')).toEqual({ active: false });
      expect(await introspect('oncall@example.com')).toMatchObject({ active: true });
    } finally {
      await broker.close();
    }
  });
});
