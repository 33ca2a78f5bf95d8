import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import type { AddressInfo, Server } from 'node:net';
import path from 'node:path';
import { parseAuditLines } from '../../src/audit/audit-lines';
import { compareStreamIds } from '../../src/audit/stream-ids';
import { isSettled, type Lease } from '../../src/domain/types';
import { startTestBroker, waitFor, type TestBroker } from '../support/broker';
import { tempDir } from '../support/fixtures';
import { startAlertReceiver } from '../support/flaky-backend';
import { runTasklease } from '../support/processes';
import { startNode, type RedisNode } from '../support/redis-topology';

/** RDB only, saved when the test says (SAVE), never on shutdown: a backup taken at one moment. */
const rdbNodeArgs = (port: number, dir: string) => [
  ...['--port', String(port), '--dir', dir, '--logfile', path.join(dir, 'redis.log')],
  ...'--bind 127.0.0.1 --protected-mode no --appendonly no --maxmemory-policy noeviction'.split(' '),
  ...'--hash-max-listpack-value 256 --loglevel warning'.split(' '),
  ...['--save', ''],
];

/**
 * Redis restored from an older RDB while the worker keeps its audit file (audit.file): the file is ahead of
 * Redis. The broker says so (log, metrics, audit.restored), does not halt, and brings back every lease the
 * file shows Redis forgot, so each ends revoked or expired; one revoked after the snapshot is revoked again,
 * never counted as a failure; `audit verify` names the restore with both heads, on Redis and on the file.
 */
describe('Redis restored from an older snapshot, with the audit file ahead', () => {
  let node: RedisNode;
  let broker: TestBroker;
  let dir: string;
  let auditFile: string;
  let jwksFile: string;
  let agent: string;
  let admin: string;
  let resourceServer: string;
  let receiver: Server;
  const alerts: any[] = [];

  beforeAll(async () => {
    node = await startNode('restore', rdbNodeArgs);
    receiver = await startAlertReceiver(alerts);
    const hook = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks/tasklease`;
    dir = tempDir('restore');
    auditFile = path.join(dir, 'audit.jsonl');
    broker = await startTestBroker({
      redisUrl: `redis://${node.address}`,
      // The API's failover replay re-applies its last seconds of writes from memory after a primary change;
      // a backup is older than any such window, so it is off here: what comes back comes from the file.
      broker: { failoverReplaySeconds: 0 },
      audit: { sealIntervalMs: 100, file: auditFile },
      revocation: { backoffMs: 50, attempts: 3, sweepIntervalMs: 200 },
      alerts: { irrevocableWebhook: hook },
    });
    jwksFile = path.join(dir, 'jwks.json');
    writeFileSync(jwksFile, JSON.stringify(broker.signingKeys.jwks));
    agent = await broker.agents.sign({ sub: 'restore-agent' });
    admin = await broker.admins.sign({ sub: 'oncall@example.com' });
    resourceServer = await broker.admins.sign({ sub: 'artifacts-api' });
  });
  afterAll(async () => {
    await broker?.close();
    await node?.stop();
    await new Promise<void>((resolve) => receiver?.close(() => resolve()));
  });

  const declare = async () => {
    const task = await broker.call('POST', '/v1/tasks', agent, {
      purpose: 'restore drill',
      ticket: 'OPS-77',
    });
    expect(task.status).toBe(201);
    return task.body.taskId as string;
  };
  const issue = async (taskId: string, ttlSeconds: number) => {
    const issued = await broker.call('POST', `/v1/tasks/${taskId}/credentials`, agent, {
      grant: 'artifacts-read',
      ttlSeconds,
    });
    expect(issued.status).toBe(201);
    return { leaseId: issued.body.leaseId as string, token: issued.body.credential.token as string };
  };
  const introspect = async (token: string) => {
    const response = await fetch(`${broker.url}/v1/introspect`, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Bearer ${resourceServer}`,
      },
      body: new URLSearchParams({ token }).toString(),
    });
    return ((await response.json()) as { active: boolean }).active;
  };
  const lease = (leaseId: string): Promise<Lease | null> => broker.context.deps.leases.get(leaseId);
  /** Every event in Redis now is sealed, and the file holds that seal: the file has all of it, durably. */
  const fileCaughtUp = async () => {
    const { redis, keys } = broker.context;
    const [[lastEvent]] = (await redis.xrevrange(keys.audit(), '+', '-', 'COUNT', 1)) as unknown as [
      [string],
    ];
    const seal = await waitFor(async () => {
      const newest = await broker.context.deps.audit.newestSeal();
      return newest && compareStreamIds(newest.id, lastEvent) >= 0 ? newest : null;
    }, 15_000);
    await waitFor(async () => readFileSync(auditFile, 'utf8').includes(`"id":"${seal.id}","seal"`), 15_000);
  };
  const ready = () =>
    waitFor(async () => (await fetch(`${broker.url}/readyz`).catch(() => null))?.status === 200, 15_000);
  /** A metric's value; without labels given, its sum over every label set. */
  const metric = async (name: string) => {
    const text = await (await fetch(`${broker.url}/metrics`)).text();
    const pattern = name.includes('{')
      ? new RegExp(`^${name.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'gm')
      : new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm');
    return [...text.matchAll(pattern)].reduce((sum, match) => sum + Number(match[1]), 0);
  };

  it('recovers every lease issued after the snapshot, revokes again one revoked after it, and says so', async () => {
    // Before the snapshot: an open task with a lease, and a lease that will be revoked after it.
    const before = await declare();
    const keptBefore = await issue(before, 600);
    const revokedAfter = await issue(before, 600);
    await fileCaughtUp();
    await node.cli('SAVE');
    copyFileSync(path.join(node.dir, 'dump.rdb'), path.join(dir, 'backup.rdb'));

    // After the snapshot: a lease in the old task (short, to expire), leases in a task Redis will not have,
    // a task completed (its leases revoked), and the revocation of a lease Redis's backup holds active.
    const expiring = await issue(before, 6);
    const lostTask = await declare();
    const inLostTask = [await issue(lostTask, 600), await issue(lostTask, 600)];
    const completed = await declare();
    const inCompleted = [await issue(completed, 600), await issue(completed, 600)];
    expect(
      (await broker.call('POST', `/v1/tasks/${completed}/complete`, agent, { outcome: 'succeeded' })).status,
    ).toBe(200);
    const revoke = await broker.call('POST', `/v1/leases/${revokedAfter.leaseId}/revoke`, admin, {
      reason: 'INC-9 drill',
    });
    expect(revoke.status).toBe(202);
    const afterSnapshot = [expiring, ...inLostTask, ...inCompleted];
    await waitFor(async () => {
      const all = await Promise.all([...inCompleted, revokedAfter].map((issued) => lease(issued.leaseId)));
      return all.every((held) => held && isSettled(held.state));
    }, 15_000);
    expect(await introspect(revokedAfter.token)).toBe(false);
    await fileCaughtUp();
    const failedBefore = await metric('tasklease_revocation_failures_total');

    // Redis comes back from the backup: everything after it is gone from Redis.
    await node.stop();
    copyFileSync(path.join(dir, 'backup.rdb'), path.join(node.dir, 'dump.rdb'));
    await node.restart();
    await ready();

    // The worker finds the file ahead, recovers, and records it; the broker goes on issuing meanwhile.
    await waitFor(async () => (await metric('tasklease_audit_restores_detected_total')) >= 1, 20_000);
    expect(await metric('tasklease_audit_restores_detected_total')).toBe(1);
    expect(await metric('tasklease_audit_events_beyond_redis')).toBeGreaterThan(0);
    // Not taken for tampering: sealing goes on.
    expect(await metric('tasklease_audit_sealing_halted')).toBe(0);

    // On-call hears of it on the irrevocable-lease webhook, with both heads and what was recovered.
    await waitFor(async () => alerts.length > 0, 10_000);
    expect(alerts).toEqual([
      expect.objectContaining({
        event: 'tasklease.audit.restore_detected',
        redisHead: expect.objectContaining({ seq: expect.any(Number) }),
        fileHead: expect.objectContaining({ seq: expect.any(Number) }),
        eventsBeyond: expect.any(Number),
        file: auditFile,
        leases: expect.objectContaining({ leasesInFile: afterSnapshot.length, revokedAgain: 3 }),
      }),
    ]);
    expect(alerts[0].fileHead.seq).toBeGreaterThan(alerts[0].redisHead.seq);

    // Every lease issued after the snapshot is back, and ends revoked (its task gone or completed) or
    // expired (its task open): none is left active past its time, none forgotten.
    await waitFor(async () => {
      const all = await Promise.all(afterSnapshot.map((issued) => lease(issued.leaseId)));
      return all.every((held) => held && isSettled(held.state));
    }, 20_000);
    for (const issued of [...inLostTask, ...inCompleted]) {
      expect((await lease(issued.leaseId))?.state).toBe('revoked');
      expect(await introspect(issued.token)).toBe(false);
    }
    expect((await lease(expiring.leaseId))?.state).toBe('expired');
    // Revoked after the snapshot, active in the backup: revoked again, settled as the file recorded.
    const again = await lease(revokedAfter.leaseId);
    expect(again?.state).toBe('revoked');
    expect(await introspect(revokedAfter.token)).toBe(false);
    // The lease from before the snapshot, untouched by anything after it, is still active.
    expect((await lease(keptBefore.leaseId))?.state).toBe('active');
    expect(await introspect(keptBefore.token)).toBe(true);
    // Revoking again is not a new failure.
    expect(await metric('tasklease_revocation_failures_total')).toBe(failedBefore);
    // Settled after the snapshot (the revoked one and the completed task's): revoked again, once each.
    expect(await metric('tasklease_audit_leases_recovered_total{action="revoked_again"}')).toBe(
      1 + inCompleted.length,
    );
    expect(
      (await metric('tasklease_audit_leases_recovered_total{action="restored"}')) +
        (await metric('tasklease_audit_leases_recovered_total{action="revoking"}')),
    ).toBe(afterSnapshot.length);

    // The broker still works: a new credential is issued and recorded.
    const fresh = await issue(before, 600);
    expect((await lease(fresh.leaseId))?.state).toBe('active');

    // Redis's own log records the restore: an audit.restored event, and no lease.revoke_failed.
    const events = await broker.context.deps.audit.query({ limit: 100_000 });
    const restored = events.filter((event) => event.type === 'audit.restored');
    expect(restored).toHaveLength(1);
    expect(events.filter((event) => event.type === 'lease.revoke_failed')).toEqual([]);
    expect(
      events
        .filter((event) => event.type === 'lease.restored')
        .map((e) => e.lease)
        .sort(),
    ).toEqual(afterSnapshot.map((issued) => issued.leaseId).sort());
  });

  it('audit verify names the restore with both heads, on the broker and on the file, and both pass', async () => {
    const cli = (args: string[]) =>
      runTasklease(['audit', 'verify', '--jwks', jwksFile, ...args], {
        TASKLEASE_ADDR: broker.url,
        TASKLEASE_TOKEN: admin,
      });
    // The file has caught up with the seals after the restore.
    const newest = (await broker.context.deps.audit.newestSeal())!.id;
    await waitFor(async () => readFileSync(auditFile, 'utf8').includes(`"id":"${newest}","seal"`), 15_000);
    const parsed = parseAuditLines(readFileSync(auditFile, 'utf8'));
    expect(parsed.restores).toHaveLength(1);
    const [mark] = parsed.restores;

    for (const args of [['--json'], ['--file', auditFile, '--json']]) {
      const result = await cli(args);
      const verification = JSON.parse(result.stdout);
      expect({ code: result.code, ok: verification.ok, problems: verification.problems }).toEqual({
        code: 0,
        ok: true,
        problems: [],
      });
      expect(verification.restores).toEqual([
        expect.objectContaining({ redisHead: mark!.redisHead, fileHead: mark!.fileHead }),
      ]);
    }
    expect(mark!.fileHead.seq).toBeGreaterThan(mark!.redisHead.seq);
    const text = await cli(['--file', auditFile]);
    expect(text.stdout).toContain('audit log: OK');
    expect(text.stdout).toContain(
      `restore: Redis came back from an older snapshot (found ${mark!.detectedAt}): its chain went on from event ${mark!.redisHead.seq.toLocaleString('en-US')}`,
    );
    expect(text.stdout).toContain(
      `while the audit file held up to event ${mark!.fileHead.seq.toLocaleString('en-US')}`,
    );
  });
});
