import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseAuditLines } from '../../src/audit/audit-lines';
import { compareStreamIds } from '../../src/audit/stream-ids';
import { createLogger } from '../../src/observability/logger';
import { startWorker, type RunningWorker } from '../../src/wiring/worker';
import { startTestBroker, testRedisTarget, waitFor, type TestBroker } from '../support/broker';
import { tempDir } from '../support/fixtures';
import { runTasklease } from '../support/processes';

const RETENTION_SECONDS = 2;

/**
 * audit.retentionSeconds trims the stream in Redis of events older than the retention, only once they are
 * sealed and every audit file holds them; the anchor seal stays, an audit.trimmed event names it, and
 * `audit verify` says the log starts at a trim, not that it was cut. The files keep everything.
 */
describe('audit retention: the stream is trimmed of what the audit files hold', () => {
  let broker: TestBroker;
  let dir: string;
  let auditFile: string;
  let jwksFile: string;
  let agent: string;
  let admin: string;
  let second: RunningWorker | null = null;

  beforeAll(async () => {
    dir = tempDir('retention');
    auditFile = path.join(dir, 'audit.jsonl');
    broker = await startTestBroker({
      audit: { sealIntervalMs: 100, file: auditFile, retentionSeconds: RETENTION_SECONDS },
    });
    jwksFile = path.join(dir, 'jwks.json');
    writeFileSync(jwksFile, JSON.stringify(broker.signingKeys.jwks));
    agent = await broker.agents.sign({ sub: 'retention-agent' });
    admin = await broker.admins.sign({ sub: 'oncall@example.com' });
  });
  afterAll(async () => {
    await second?.close();
    await broker?.close();
  });

  const issueSome = async (count: number) => {
    const task = await broker.call('POST', '/v1/tasks', agent, { purpose: 'retention', ticket: 'OPS-5' });
    expect(task.status).toBe(201);
    const leases: string[] = [];
    for (let i = 0; i < count; i++) {
      const issued = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
        grant: 'artifacts-read',
        ttlSeconds: 600,
      });
      expect(issued.status).toBe(201);
      leases.push(issued.body.leaseId);
    }
    return leases;
  };
  const trimmedCount = async () => {
    const text = await (await fetch(`${broker.url}/metrics`)).text();
    return Number(/^tasklease_audit_events_trimmed_total (\S+)$/m.exec(text)?.[1] ?? 0);
  };
  const inRedis = async (leaseId: string) =>
    (await broker.context.deps.audit.query({ limit: 100_000 })).some((event) => event.lease === leaseId);
  const verify = (args: string[]) =>
    runTasklease(['audit', 'verify', '--jwks', jwksFile, ...args], {
      TASKLEASE_ADDR: broker.url,
      TASKLEASE_TOKEN: admin,
    });

  it('trims sealed events past the retention from Redis; the file keeps them; verify names the trim', async () => {
    const early = await issueSome(5);
    await waitFor(async () => (await trimmedCount()) > 0, 15_000);
    await waitFor(async () => !(await inRedis(early[4]!)), 10_000);

    // The anchor seal stays in Redis with nothing of its own before it; an audit.trimmed event names it.
    const events = await broker.context.deps.audit.query({ limit: 100_000 });
    const trims = events.filter((event) => event.type === 'audit.trimmed');
    expect(trims.length).toBeGreaterThan(0);
    const [oldestSeal] = await broker.context.deps.audit.seals(undefined, 1);
    const [oldestEvent] = await broker.context.deps.audit.entries(undefined, 1);
    expect(compareStreamIds(oldestEvent!.id, oldestSeal!.id)).toBeGreaterThan(0);

    // The file holds every early event.
    const file = parseAuditLines(readFileSync(auditFile, 'utf8'));
    for (const leaseId of early)
      expect(file.entries.some((e) => e.json.includes(`"lease":"${leaseId}"`))).toBe(true);

    const onRedis = await verify(['--json']);
    const verification = JSON.parse(onRedis.stdout);
    expect({ code: onRedis.code, ok: verification.ok, problems: verification.problems }).toEqual({
      code: 0,
      ok: true,
      problems: [],
    });
    expect(verification.trimmed).toMatchObject({
      anchor: { id: expect.any(String), seq: expect.any(Number) },
      keptIn: expect.stringContaining(auditFile),
    });
    const text = await verify([]);
    expect(text.stdout).toContain('audit log: OK');
    expect(text.stdout).toMatch(
      /^trimmed: the events up to event [\d,]+ \(seal \S+, hash \w+\) were trimmed/m,
    );

    const onFile = await verify(['--file', auditFile, '--json']);
    expect(JSON.parse(onFile.stdout)).toMatchObject({ ok: true, problems: [], trimmed: null });
    expect(onFile.code).toBe(0);
  });

  it('a file that lags holds the trim back; once it is gone for the retention, it no longer does', async () => {
    const { redis, keys } = broker.context;
    const held = (await broker.context.deps.audit.newestSeal())!;
    // Another worker's file, at `held`, heard of all along.
    const record = () =>
      redis.hset(
        keys.auditCopies(),
        'other-host:/var/lib/tasklease/audit.jsonl',
        JSON.stringify({
          sealId: held.id,
          seq: 0,
          atMs: Date.now(),
        }),
      );
    await record();
    const later = await issueSome(3);
    const until = Date.now() + (RETENTION_SECONDS + 2) * 1000;
    while (Date.now() < until) {
      await record();
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    // Nothing after the laggard's seal was trimmed, however old.
    for (const leaseId of later) expect(await inRedis(leaseId)).toBe(true);
    const [oldestSeal] = await broker.context.deps.audit.seals(undefined, 1);
    expect(compareStreamIds(oldestSeal!.id, held.id)).toBeLessThanOrEqual(0);

    // Not heard of for the retention: its worker is gone, and the trim goes on past it.
    await waitFor(async () => !(await inRedis(later[2]!)), (RETENTION_SECONDS + 8) * 1000);
  });

  it('a new audit file on a trimmed log starts at the anchor, and verifies', async () => {
    const otherFile = path.join(dir, 'second.jsonl');
    second = await startWorker({
      config: { ...broker.config, audit: { ...broker.config.audit, file: otherFile } },
      redis: testRedisTarget(),
      logger: createLogger('silent'),
      host: '127.0.0.1',
      port: null,
    });
    await issueSome(1);
    const newest = (await broker.context.deps.audit.newestSeal())!.id;
    await waitFor(async () => readFileSync(otherFile, 'utf8').includes(`"id":"${newest}","seal"`), 10_000);
    const result = await verify(['--file', otherFile, '--json']);
    const verification = JSON.parse(result.stdout);
    expect({ code: result.code, ok: verification.ok, problems: verification.problems }).toEqual({
      code: 0,
      ok: true,
      problems: [],
    });
    expect(verification.trimmed).toMatchObject({ anchor: { id: expect.any(String) } });
  });
});
