import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { decodeJwt, decodeProtectedHeader, generateKeyPair, SignJWT } from 'jose';
import { startTestBroker, waitFor, type TestBroker } from '../support/broker';
import { tempDir } from '../support/fixtures';
import { runTasklease } from '../support/processes';

/**
 * The hash-chained audit log end to end: a broker seals what it audits; `tasklease audit verify` (the real
 * CLI, against the API or a file) passes an untouched log and names what was changed, removed or reordered
 * in Redis, in the file sink and in an export.
 */
const EXIT_VERIFICATION_FAILED = 6;

async function activity(broker: TestBroker, subject: string) {
  const agent = await broker.agents.sign({ sub: subject });
  const task = await broker.call('POST', '/v1/tasks', agent, { purpose: 'nightly export', ticket: 'OPS-7' });
  expect(task.status).toBe(201);
  for (let i = 0; i < 3; i++) {
    const issued = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
      grant: 'artifacts-read',
    });
    expect(issued.status).toBe(201);
  }
  const denied = await broker.call('POST', `/v1/tasks/${task.body.taskId}/credentials`, agent, {
    grant: 'artifacts-write',
  });
  expect(denied.status).toBe(403);
  const completed = await broker.call('POST', `/v1/tasks/${task.body.taskId}/complete`, agent, {
    outcome: 'succeeded',
  });
  expect(completed.status).toBe(200);
  return task.body.taskId as string;
}

/** Until every revocation has settled (the worker's events are in) and the newest seal covers the newest event. */
async function sealed(broker: TestBroker, settledLeases: number) {
  const { redis, keys } = broker.context;
  await waitFor(async () => {
    const settled = (await broker.context.deps.audit.query({ limit: 10_000 })).filter(
      (event) => event.type === 'lease.settled',
    );
    if (settled.length < settledLeases) return false;
    const [newestEvent] = await redis.xrevrange(keys.audit(), '+', '-', 'COUNT', 1);
    const newestSeal = await broker.context.deps.audit.newestSeal();
    return newestEvent && newestSeal?.id === newestEvent[0];
  }, 10_000);
}

/** Rewrites the audit stream as a tamperer with Redis access would: same ids, whatever content. */
async function rewriteStream(
  broker: TestBroker,
  change: (entries: [string, string][]) => [string, string][],
) {
  const { redis, keys } = broker.context;
  const entries = (await redis.xrange(keys.audit(), '-', '+')).map(
    ([id, fields]) => [id, fields[1] as string] as [string, string],
  );
  const changed = change(entries);
  await redis.del(keys.audit());
  for (const [id, json] of changed) await redis.xadd(keys.audit(), id, 'event', json);
}

describe('the hash-chained audit log', () => {
  let broker: TestBroker;
  let admin: string;
  let jwksFile: string;
  let dir: string;
  let taskId: string;
  const cli = (args: string[]) => runTasklease(args, { TASKLEASE_ADDR: broker.url, TASKLEASE_TOKEN: admin });

  beforeEach(async () => {
    dir = tempDir('audit');
    broker = await startTestBroker({
      audit: { sealIntervalMs: 100, file: path.join(dir, 'audit.jsonl') },
    });
    admin = await broker.admins.sign({ sub: 'oncall@example.com' });
    jwksFile = path.join(dir, 'jwks.json');
    writeFileSync(jwksFile, JSON.stringify(broker.signingKeys.jwks));
    taskId = await activity(broker, 'agent-1');
    await activity(broker, 'agent-2');
    await sealed(broker, 6);
  });
  afterEach(() => broker.close());

  it('verifies an untouched log, through the API and pinned to a JWKS file', async () => {
    const result = await cli(['audit', 'verify', '--jwks', jwksFile, '--json']);
    expect(result.code).toBe(0);
    const report = JSON.parse(result.stdout);
    expect(report).toMatchObject({ ok: true, mode: 'full', problems: [] });
    // Two tasks: declared, three issued, one denied, completed, three revocations requested, each.
    expect(report.verifiedEvents).toBeGreaterThanOrEqual(18);
    expect(report.head.seq).toBe(report.verifiedEvents);

    const human = await cli(['audit', 'verify']);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^audit log: OK, \d+ events verified against \d+ seals/);
    expect(human.stdout).toContain("the broker's own; pin with --jwks");
  });

  it('names an event whose content was changed in Redis', async () => {
    let target = '';
    await rewriteStream(broker, (entries) =>
      entries.map(([id, json]) => {
        const event = JSON.parse(json);
        if (event.type !== 'credential.denied' || target) return [id, json];
        target = id;
        return [id, JSON.stringify({ ...event, reason: 'permitted after all' })];
      }),
    );
    const result = await cli(['audit', 'verify', '--jwks', jwksFile]);
    expect(result.code).toBe(EXIT_VERIFICATION_FAILED);
    expect(result.stdout).toContain('audit log: FAILED');
    expect(result.stdout).toContain(`changed: event ${target} differs from what seal`);
  });

  it('notices an event removed from Redis', async () => {
    const { redis, keys } = broker.context;
    const [, second] = await redis.xrange(keys.audit(), '-', '+', 'COUNT', 2);
    await redis.xdel(keys.audit(), second?.[0] as string);
    const result = await cli(['audit', 'verify', '--jwks', jwksFile, '--json']);
    expect(result.code).toBe(EXIT_VERIFICATION_FAILED);
    const report = JSON.parse(result.stdout);
    expect(report.problems).toEqual([
      expect.objectContaining({ kind: 'removed', message: expect.stringContaining('among events 2 ') }),
    ]);
  });

  it('notices two events whose contents were swapped', async () => {
    const swapped: string[] = [];
    await rewriteStream(broker, (entries) => {
      const copy = [...entries];
      const [a, b] = [copy[1] as [string, string], copy[2] as [string, string]];
      copy[1] = [a[0], b[1]];
      copy[2] = [b[0], a[1]];
      swapped.push(a[0], b[0]);
      return copy;
    });
    const result = await cli(['audit', 'verify', '--jwks', jwksFile, '--json']);
    expect(result.code).toBe(EXIT_VERIFICATION_FAILED);
    const report = JSON.parse(result.stdout);
    expect(report.problems).toEqual([expect.objectContaining({ kind: 'reordered', ids: swapped })]);
  });

  it('notices a seal not signed by the broker, and a removed seal', async () => {
    // A third task after everything was sealed: at least two seals, whatever the timing.
    await activity(broker, 'agent-3');
    await sealed(broker, 9);
    const { redis, keys } = broker.context;
    const seals = (await redis.xrange(keys.auditSeals(), '-', '+')).map(
      ([id, fields]) => [id, fields[1] as string] as [string, string],
    );
    const [firstId, firstJws] = seals[0] as [string, string];
    // A forger without the broker's private key signs the same seal with a key of its own, under its kid.
    const { privateKey } = await generateKeyPair('ES256');
    const forged = await new SignJWT(decodeJwt(firstJws))
      .setProtectedHeader(decodeProtectedHeader(firstJws) as { alg: string })
      .sign(privateKey);
    const rewriteSeals = async (list: [string, string][]) => {
      await redis.del(keys.auditSeals());
      for (const [id, jws] of list) await redis.xadd(keys.auditSeals(), id, 'seal', jws);
    };
    const kinds = async () => {
      const result = await cli(['audit', 'verify', '--jwks', jwksFile, '--json']);
      expect(result.code).toBe(EXIT_VERIFICATION_FAILED);
      return JSON.parse(result.stdout).problems.map((problem: { kind: string }) => problem.kind);
    };

    await rewriteSeals([[firstId, forged], ...seals.slice(1)]);
    expect(await kinds()).toContain('bad-seal');
    await rewriteSeals(seals.slice(1));
    expect(await kinds()).toContain('truncated-start');
  });

  it('notices the newest events deleted while their seal stays', async () => {
    const { redis, keys } = broker.context;
    const newest = (await broker.context.deps.audit.newestSeal())?.id as string;
    const covered = await broker.context.deps.audit.entriesBetween(
      (decodeJwt((await broker.context.deps.audit.newestSeal())?.jws as string) as { firstId: string })
        .firstId,
      newest,
    );
    await redis.xdel(keys.audit(), ...covered.map((entry) => entry.id));
    const result = await cli(['audit', 'verify', '--jwks', jwksFile, '--json']);
    expect(result.code).toBe(EXIT_VERIFICATION_FAILED);
    expect(JSON.parse(result.stdout).problems.map((problem: { kind: string }) => problem.kind)).toEqual([
      'removed',
    ]);
  });

  it('will not seal a rewritten history: seals deleted and an event edited stay unsealed', async () => {
    const noted = JSON.parse((await cli(['audit', 'verify', '--jwks', jwksFile, '--json'])).stdout).head;
    const { redis, keys } = broker.context;
    await sealed(broker, 6);
    await redis.del(keys.auditSeals());
    await rewriteStream(broker, (entries) =>
      entries.map(([id, json]) => [id, json.replace('"reason":"permitted', '"reason":"waved through')]),
    );
    // Several sealing intervals pass: the API refuses to sign what it cannot tie to what it sealed before.
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(await redis.xlen(keys.auditSeals())).toBe(0);
    const metrics = await (await fetch(`${broker.url}/metrics`)).text();
    expect(metrics).toMatch(/^tasklease_audit_sealing_halted 1$/m);
    const result = await cli([
      'audit',
      'verify',
      '--jwks',
      jwksFile,
      '--expect',
      `${noted.seq}:${noted.hash}`,
    ]);
    expect(result.code).toBe(EXIT_VERIFICATION_FAILED);
    expect(result.stdout).toContain(`truncated-end: no seal covers event ${noted.seq}`);
  });

  it('appends a seal only over the newest one it read (two sealers cannot both seal)', async () => {
    const { audit } = broker.context.deps;
    const newest = await audit.newestSeal();
    expect(await audit.appendSeal('1-1', { id: '99999999999999-0', jws: 'x' })).toBe('raced');
    expect((await audit.newestSeal())?.id).toBe(newest?.id);
  });

  it('keeps a file sink that verifies offline and shows edits, removals and reordering', async () => {
    const file = path.join(dir, 'audit.jsonl');
    const lastSeal = (await broker.context.deps.audit.newestSeal())?.id as string;
    await waitFor(async () => readFileSync(file, 'utf8').includes(`"id":"${lastSeal}","seal"`), 10_000);
    const verifyFile = (text: string) => {
      const copy = path.join(dir, `copy-${Math.random()}.jsonl`);
      writeFileSync(copy, text);
      return runTasklease(['audit', 'verify', '--file', copy, '--jwks', jwksFile, '--json'], {});
    };
    const text = readFileSync(file, 'utf8');
    const intact = await verifyFile(text);
    expect(intact.code).toBe(0);
    expect(JSON.parse(intact.stdout)).toMatchObject({ ok: true, mode: 'full', unsealed: 0 });

    const lines = text.trimEnd().split('\n');
    const eventAt = lines.findIndex((line) => line.includes('"type":"credential.issued"'));
    const edited = [...lines];
    edited[eventAt] = (edited[eventAt] as string).replace(
      '"grant":"artifacts-read"',
      '"grant":"artifacts-write"',
    );
    const removed = lines.filter((_, index) => index !== eventAt);
    const reordered = [...lines];
    [reordered[eventAt], reordered[eventAt + 1]] = [lines[eventAt + 1] as string, lines[eventAt] as string];

    const kindsOf = async (variant: string[]) => {
      const result = await verifyFile(`${variant.join('\n')}\n`);
      expect(result.code).toBe(EXIT_VERIFICATION_FAILED);
      return JSON.parse(result.stdout).problems.map((problem: { kind: string }) => problem.kind);
    };
    expect(await kindsOf(edited)).toEqual(['changed']);
    expect(await kindsOf(removed)).toEqual(['removed']);
    expect(await kindsOf(reordered)).toContain('reordered');
  });

  it("exports one task's events as evidence that verifies on its own, and fails once edited", async () => {
    const out = path.join(dir, 'task.jsonl');
    const exported = await cli(['audit', 'export', '--task', taskId, '--out', out]);
    expect(exported.code).toBe(0);
    const lines = readFileSync(out, 'utf8').trimEnd().split('\n');
    const events = lines.map((line) => JSON.parse(line)).filter((line) => line.type === 'event');
    expect(events.length).toBeGreaterThanOrEqual(8);
    expect(events.every((line) => line.event.task === taskId)).toBe(true);
    expect(JSON.parse(lines[0] as string)).toMatchObject({ type: 'header', filter: { task: taskId } });

    const verify = await runTasklease(['audit', 'verify', '--file', out, '--export', '--jwks', jwksFile], {});
    expect(verify.code).toBe(0);
    expect(verify.stdout).toMatch(/^audit export: OK, \d+ events verified/);

    writeFileSync(out, readFileSync(out, 'utf8').replace('"reason":"succeeded"', '"reason":"failed"'));
    const tampered = await runTasklease(
      ['audit', 'verify', '--file', out, '--export', '--jwks', jwksFile],
      {},
    );
    expect(tampered.code).toBe(EXIT_VERIFICATION_FAILED);
    expect(tampered.stdout).toContain('changed: event');
  });
});
