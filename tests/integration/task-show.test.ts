import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { decodeJwt } from 'jose';
import { generateSigningJwks, loadSigningKeys } from '../../src/signing/signing-keys';
import { signTaskRecord } from '../../src/tasks/task-record';
import { startTestBroker, waitFor, type TestBroker } from '../support/broker';
import { tempDir } from '../support/fixtures';
import { runTasklease } from '../support/processes';

/**
 * "Recreate the workspace from a ticket, a branch and a signed record": after a task is gone from Redis,
 * `tasklease task show` rebuilds it from its sealed audit events and checks the agent's signed record
 * against them; `tasklease record verify` checks a record offline against a JWKS.
 */
describe('task show and record verify', () => {
  let broker: TestBroker;
  let dir: string;
  let jwksFile: string;
  let admin: string;
  let taskId: string;
  let recordFile: string;
  let leaseIds: string[];
  const cli = (args: string[]) => runTasklease(args, { TASKLEASE_ADDR: broker.url, TASKLEASE_TOKEN: admin });

  beforeAll(async () => {
    dir = tempDir('task-show');
    broker = await startTestBroker({ audit: { sealIntervalMs: 100 } });
    admin = await broker.admins.sign({ sub: 'oncall@example.com' });
    jwksFile = path.join(dir, 'jwks.json');
    writeFileSync(jwksFile, JSON.stringify(broker.signingKeys.jwks));
    const agent = await broker.agents.sign({ sub: 'repo:acme/api:ref:refs/heads/main' });
    const task = await broker.call('POST', '/v1/tasks', agent, {
      purpose: 'rotate the artifacts cache',
      ticket: 'OPS-4242',
      ref: 'refs/heads/main',
    });
    taskId = task.body.taskId;
    leaseIds = [];
    for (const grant of ['artifacts-read', 'artifacts-write']) {
      const issued = await broker.call('POST', `/v1/tasks/${taskId}/credentials`, agent, { grant });
      expect(issued.status).toBe(201);
      leaseIds.push(issued.body.leaseId);
    }
    const completed = await broker.call('POST', `/v1/tasks/${taskId}/complete`, agent, {
      outcome: 'succeeded',
    });
    recordFile = path.join(dir, 'complete.json');
    writeFileSync(recordFile, JSON.stringify(completed.body));
    const { redis, keys } = broker.context;
    await waitFor(async () => {
      // Read straight from the store: an admin call would itself append an event and keep the log moving.
      const events = await broker.context.deps.audit.query({ task: taskId, limit: 100 });
      const types = events.map((event) => event.type);
      const [newest] = await redis.xrevrange(keys.audit(), '+', '-', 'COUNT', 1);
      const seal = await broker.context.deps.audit.newestSeal();
      return (
        types.filter((type: string) => type === 'lease.settled').length === 2 && seal?.id === newest?.[0]
      );
    }, 10_000);
    // The task and its leases are gone from Redis (as after retention): only the audit log remains.
    await redis.del(keys.task(taskId), keys.taskLeases(taskId), ...leaseIds.map((id) => keys.lease(id)));
  });
  afterAll(() => broker.close());

  it('rebuilds the task from its audit events and agrees with its signed record', async () => {
    const result = await cli(['task', 'show', taskId, '--record', recordFile, '--jwks', jwksFile]);
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('identity  agents/repo:acme/api:ref:refs/heads/main');
    expect(result.stdout).toContain('purpose   rotate the artifacts cache');
    expect(result.stdout).toContain('ticket    OPS-4242');
    expect(result.stdout).toContain('ref       refs/heads/main');
    expect(result.stdout).toMatch(/completed .* \(succeeded\)/);
    for (const id of leaseIds) expect(result.stdout).toMatch(new RegExp(`${id} .* revoked`));
    expect(result.stdout).toContain('record: signature verified; agrees with the audit log');

    const json = JSON.parse((await cli(['task', 'show', taskId, '--json', '--jwks', jwksFile])).stdout);
    expect(json.verification).toMatchObject({ ok: true, mode: 'partial' });
    expect(json.leases.map((lease: { grant: string }) => lease.grant).sort()).toEqual([
      'artifacts-read',
      'artifacts-write',
    ]);
  });

  it('says where a record signed by the broker disagrees with the log', async () => {
    // A genuine record (the broker's key) that leaves a lease out and names another ticket.
    const real = decodeJwt(JSON.parse(require('node:fs').readFileSync(recordFile, 'utf8')).record) as any;
    const doctored = await signTaskRecord(
      broker.signingKeys,
      'tasklease-test',
      { ...real.task, id: taskId, ticket: 'OPS-1', grants: [], createdAtMs: 0, expiresAtMs: 0 },
      [],
      Date.now(),
    );
    const file = path.join(dir, 'doctored.jws');
    writeFileSync(file, doctored);
    const result = await cli(['task', 'show', taskId, '--record', file, '--jwks', jwksFile]);
    expect(result.code).toBe(6);
    expect(result.stdout).toContain('ticket: record says "OPS-1", audit says "OPS-4242"');
    expect(result.stdout).toContain(`lease ${leaseIds[0]} was audited as issued but is not in the record`);
  });

  it('verifies a record offline, and refuses an altered or foreign one', async () => {
    const ok = await runTasklease(['record', 'verify', recordFile, '--jwks', jwksFile], {});
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('record: verified (issuer tasklease-test');
    expect(ok.stdout).toContain('ticket OPS-4242, ref refs/heads/main, state completed, outcome succeeded');

    const jws: string = JSON.parse(require('node:fs').readFileSync(recordFile, 'utf8')).record;
    const [header, payload, signature] = jws.split('.');
    const altered = JSON.parse(Buffer.from(payload as string, 'base64url').toString());
    altered.task.ticket = 'OPS-1';
    const alteredFile = path.join(dir, 'altered.jws');
    writeFileSync(
      alteredFile,
      `${header}.${Buffer.from(JSON.stringify(altered)).toString('base64url')}.${signature}`,
    );
    const refused = await runTasklease(['record', 'verify', alteredFile, '--jwks', jwksFile], {});
    expect(refused.code).toBe(6);
    expect(refused.stdout).toContain('record: does not verify: signature verification failed');

    const otherKeys = path.join(dir, 'other.json');
    writeFileSync(
      otherKeys,
      JSON.stringify((await loadSigningKeys(JSON.stringify(await generateSigningJwks()))).jwks),
    );
    const foreign = await runTasklease(['record', 'verify', recordFile, '--jwks', otherKeys, '--json'], {});
    expect(foreign.code).toBe(6);
    expect(JSON.parse(foreign.stdout)).toMatchObject({ verified: false });
  });
});
