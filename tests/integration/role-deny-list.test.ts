import { setTimeout as sleep } from 'node:timers/promises';
import type { RedisClient } from '../../src/redis/connection';
import { RedisKeys } from '../../src/redis/keys';
import { connectRedis, waitForReady } from '../../src/redis/connection';
import {
  HOUR_MS,
  parseDenyDocument,
  policySize,
  renderDenyDocument,
  type DeniedSession,
} from '../../src/providers/aws-sts/deny-policy';
import {
  createRoleDenyList,
  PolicyTooLargeError,
  type RoleDenyList,
  type RolePolicyStore,
  type RoleTarget,
} from '../../src/providers/aws-sts/role-deny-list';
import { testRedisTarget, uniquePrefix } from '../support/broker';

const ROLE_NAME = 'deploy';
const ROLE_ARN = `arn:aws:iam::123456789012:role/ci/${ROLE_NAME}`;
const ROLE_ID = 'AROA3XFRBF535PLBIFPI4';
const POLICY_NAME = 'tasklease-deny';

const target = (maxChars = 10_240): RoleTarget => ({
  roleArn: ROLE_ARN,
  policyName: POLICY_NAME,
  maxChars,
  where: { region: 'us-east-1' },
});

/** A live session as the provider records it: STS issued it a minute ago, it lasts an hour. */
const session = (name: string, options: { notAfterMs?: number; issuedAtMs?: number } = {}): DeniedSession => {
  const nowMs = Date.now();
  return {
    sessionId: `${ROLE_ID}:tl-${name}`,
    notAfterMs: options.notAfterMs ?? nowMs + HOUR_MS,
    issuedAtMs: options.issuedAtMs ?? Math.floor((nowMs - 60_000) / 1000) * 1000,
  };
};
const clock = () => Date.now();

/**
 * IAM's inline role policies in memory. Answers GetRolePolicy URL-encoded, as IAM does; counts the puts;
 * `delayMs` makes each call take a while, so concurrent revocations overlap as they do against real IAM.
 */
class FakeIam implements RolePolicyStore {
  readonly policies = new Map<string, string>();
  puts = 0;
  /** Runs before a put lands; what it throws, the put throws. */
  beforePut: (document: string) => Promise<void> | void = () => undefined;

  constructor(private readonly delayMs = 0) {}

  async get(roleName: string, policyName: string) {
    if (this.delayMs) await sleep(this.delayMs);
    const text = this.policies.get(`${roleName}/${policyName}`);
    return text === undefined ? undefined : encodeURIComponent(text);
  }

  async put(roleName: string, policyName: string, document: string) {
    if (this.delayMs) await sleep(this.delayMs);
    await this.beforePut(document);
    this.puts += 1;
    this.policies.set(`${roleName}/${policyName}`, document);
  }

  /** The broker's policy on the role, as a document. */
  document() {
    return parseDenyDocument(this.policies.get(`${ROLE_NAME}/${POLICY_NAME}`));
  }

  listedIds() {
    return this.document()
      .sessions.map((s) => s.sessionId)
      .sort();
  }

  text() {
    return this.policies.get(`${ROLE_NAME}/${POLICY_NAME}`);
  }
}

const sorted = (sessions: DeniedSession[]) => sessions.map((s) => s.sessionId).sort();

describe('the per-role deny list against Redis', () => {
  const connections: RedisClient[] = [];
  let keys: RedisKeys;
  let iam: FakeIam;

  /** A deny list as one worker replica has it: its own Redis connection, the shared IAM. */
  async function replica(store: RolePolicyStore = iam): Promise<{ list: RoleDenyList; redis: RedisClient }> {
    const redis = connectRedis(testRedisTarget(), { name: 'deny-list-test' });
    connections.push(redis);
    await waitForReady(redis, 10_000);
    return { list: createRoleDenyList({ redis, keys, iam: () => store }), redis };
  }

  beforeEach(() => {
    keys = new RedisKeys(uniquePrefix('deny'));
    iam = new FakeIam();
  });

  afterEach(async () => {
    const [first] = connections;
    if (first) {
      await first.eval(
        "local keys = redis.call('KEYS', ARGV[1]) for _, k in ipairs(keys) do redis.call('DEL', k) end return #keys",
        0,
        `${keys.prefix}*`,
      );
    }
    await Promise.all(connections.splice(0).map((redis) => redis.quit()));
  });

  it('lists one denied session in the role policy', async () => {
    const { list, redis } = await replica();
    const a = session('a');
    await expect(list.deny(target(), a, clock)).resolves.toEqual({ kind: 'listed' });
    expect(iam.listedIds()).toEqual([a.sessionId]);
    expect(iam.document().cutoffMs).toBe(0);
    expect(iam.puts).toBe(1);
    // And lets go of the role: nobody is left waiting on a lock.
    expect(await redis.exists(keys.awsDenyLock(POLICY_NAME, ROLE_ARN))).toBe(0);
  });

  it('denies a session again without rewriting the policy', async () => {
    const { list } = await replica();
    const a = session('a');
    await list.deny(target(), a, clock);
    await expect(list.deny(target(), a, clock)).resolves.toEqual({ kind: 'listed' });
    expect(iam.puts).toBe(1);
    expect(iam.listedIds()).toEqual([a.sessionId]);
  });

  it('keeps statements someone else put in the policy', async () => {
    const foreign = { Sid: 'BreakGlass', Effect: 'Deny', Action: 's3:DeleteBucket', Resource: '*' };
    iam.policies.set(
      `${ROLE_NAME}/${POLICY_NAME}`,
      JSON.stringify({ Version: '2012-10-17', Statement: [foreign] }),
    );
    const { list } = await replica();
    await list.deny(target(), session('a'), clock);
    expect(iam.document().foreign).toEqual([foreign]);
  });

  it('loses none of 50 concurrent denies on one role, and batches their writes', async () => {
    iam = new FakeIam(20);
    const { list } = await replica();
    const sessions = Array.from({ length: 50 }, (_, i) => session(`s${i}`));
    const outcomes = await Promise.all(sessions.map((s) => list.deny(target(), s, clock)));
    expect(outcomes).toEqual(sessions.map(() => ({ kind: 'listed' })));
    expect(iam.listedIds()).toEqual(sorted(sessions));
    expect(iam.puts).toBeLessThan(50);
  });

  it('loses nothing when two replicas deny on the same role at once', async () => {
    iam = new FakeIam(15);
    const first = await replica();
    const second = await replica();
    const sessions = Array.from({ length: 40 }, (_, i) => session(`r${i}`));
    const outcomes = await Promise.all(
      sessions.map((s, i) => (i % 2 ? first : second).list.deny(target(), s, clock)),
    );
    expect(outcomes.every((outcome) => outcome.kind === 'listed')).toBe(true);
    expect(iam.listedIds()).toEqual(sorted(sessions));
    expect(iam.puts).toBeLessThan(40);
  });

  it('falls back to a cut-off when IAM refuses the size of the list', async () => {
    const MAX_LISTED = 3;
    iam.beforePut = (document) => {
      if (parseDenyDocument(document).sessions.length > MAX_LISTED)
        throw new PolicyTooLargeError('LimitExceeded: Maximum policy size of 10240 bytes exceeded for role');
    };
    const { list } = await replica();
    const sessions = Array.from({ length: MAX_LISTED + 1 }, (_, i) => session(`big${i}`));
    for (const s of sessions.slice(0, MAX_LISTED))
      expect(await list.deny(target(), s, clock)).toEqual({ kind: 'listed' });

    const beforeMs = Date.now();
    const last = sessions[MAX_LISTED] as DeniedSession;
    const outcome = await list.deny(target(), last, clock);

    expect(outcome.kind).toBe('cutoff');
    const { cutoffMs } = outcome as { cutoffMs: number };
    expect(iam.document()).toEqual({ sessions: [], cutoffMs, foreign: [] });
    expect(cutoffMs).toBeGreaterThanOrEqual(Math.floor(beforeMs / 1000) * 1000);
    // Every session listed before, and the one that did not fit, is issued before the cut-off: all denied.
    for (const s of sessions) expect(s.issuedAtMs).toBeLessThan(cutoffMs);
    expect(JSON.parse(iam.text() as string).Statement).toEqual([
      expect.objectContaining({
        Sid: `TaskleaseCutoff${cutoffMs / 1000}`,
        Effect: 'Deny',
        Condition: {
          DateLessThan: { 'aws:TokenIssueTime': new Date(cutoffMs).toISOString().replace('.000Z', 'Z') },
        },
      }),
    ]);
  });

  it('cuts off by time once the list would outgrow maxChars, with no IAM error', async () => {
    const notAfterMs = Date.now() + HOUR_MS;
    const sessions = Array.from({ length: 4 }, (_, i) => session(`fit${i}`, { notAfterMs }));
    const maxChars = policySize(
      renderDenyDocument({ sessions: sessions.slice(0, 3), cutoffMs: 0, foreign: [] }),
    );
    iam.beforePut = (document) => {
      if (policySize(document) > maxChars) throw new Error('test: the broker wrote more than maxChars');
    };
    const { list } = await replica();
    for (const s of sessions.slice(0, 3))
      expect(await list.deny(target(maxChars), s, clock)).toEqual({ kind: 'listed' });
    const putsBefore = iam.puts;

    const outcome = await list.deny(target(maxChars), sessions[3] as DeniedSession, clock);

    expect(outcome.kind).toBe('cutoff');
    expect(iam.puts).toBe(putsBefore + 1);
    expect(iam.document().sessions).toEqual([]);
    expect(iam.document().cutoffMs).toBe((outcome as { cutoffMs: number }).cutoffMs);
    expect(policySize(iam.text() as string)).toBeLessThanOrEqual(maxChars);
  });

  it('answers cutoff at once, with no write, for a session issued before the existing cut-off', async () => {
    const { list } = await replica();
    // A first revocation that does not fit sets the cut-off.
    const tiny = target(policySize(renderDenyDocument({ sessions: [], cutoffMs: Date.now(), foreign: [] })));
    const first = await list.deny(tiny, session('first'), clock);
    expect(first.kind).toBe('cutoff');
    const { cutoffMs } = first as { cutoffMs: number };
    const puts = iam.puts;

    const older = session('older', { issuedAtMs: cutoffMs - 30_000 });
    await expect(list.deny(tiny, older, clock)).resolves.toEqual({ kind: 'cutoff', cutoffMs });
    expect(iam.puts).toBe(puts);

    // A session issued after the cut-off is not covered by it: it must be written.
    const newer = session('newer', { issuedAtMs: cutoffMs + 1000 });
    const outcome = await list.deny(target(), newer, clock);
    expect(outcome).toEqual({ kind: 'listed' });
    expect(iam.puts).toBe(puts + 1);
    expect(iam.document()).toEqual(
      expect.objectContaining({
        cutoffMs,
        sessions: [expect.objectContaining({ sessionId: newer.sessionId })],
      }),
    );
  });

  // Regression: a session of unknown issue time (0) once counted as covered by any cut-off (fail open).
  it('writes a session of unknown issue time even when a cut-off exists', async () => {
    const { list } = await replica();
    const tiny = target(policySize(renderDenyDocument({ sessions: [], cutoffMs: Date.now(), foreign: [] })));
    expect((await list.deny(tiny, session('first'), clock)).kind).toBe('cutoff');
    const unknown = session('unknown', { issuedAtMs: 0 });
    await expect(list.deny(target(), unknown, clock)).resolves.toEqual({ kind: 'listed' });
    expect(iam.listedIds()).toEqual([unknown.sessionId]);
  });

  it('rejects when IAM fails, releases the role, and writes the session with the next deny', async () => {
    const { list, redis } = await replica();
    const a = session('a');
    const b = session('b');
    iam.beforePut = () => {
      throw new Error('ServiceFailure: the IAM service is unavailable');
    };
    await expect(list.deny(target(), a, clock)).rejects.toThrow(/ServiceFailure/);
    expect(iam.text()).toBeUndefined();
    expect(await redis.exists(keys.awsDenyLock(POLICY_NAME, ROLE_ARN))).toBe(0);

    iam.beforePut = () => undefined;
    const startedMs = Date.now();
    await expect(list.deny(target(), b, clock)).resolves.toEqual({ kind: 'listed' });
    // It did not have to wait out a stale lock (30 s).
    expect(Date.now() - startedMs).toBeLessThan(5_000);
    expect(iam.listedIds()).toEqual(sorted([a, b]));

    // The retry of the failed revocation finds its session written and does not write again.
    const puts = iam.puts;
    await expect(list.deny(target(), a, clock)).resolves.toEqual({ kind: 'listed' });
    expect(iam.puts).toBe(puts);
  });

  it('drops sessions that have expired from the policy', async () => {
    const { list } = await replica();
    const startMs = Date.now();
    const a = session('a', { notAfterMs: startMs + 60_000 });
    const b = session('b', { notAfterMs: startMs + 2 * HOUR_MS });
    await list.deny(target(), a, () => startMs);
    expect(iam.listedIds()).toEqual([a.sessionId]);

    await list.deny(target(), b, () => a.notAfterMs + 60_000);
    expect(iam.listedIds()).toEqual([b.sessionId]);
  });

  it('answers expired, writing nothing, for a session that expired before its deny', async () => {
    const { list } = await replica();
    // Past its expiry by more than the clock-skew margin the deny list keeps sessions for.
    const gone = session('gone', { notAfterMs: Date.now() - 61_000, issuedAtMs: Date.now() - HOUR_MS });
    await expect(list.deny(target(), gone, clock)).resolves.toEqual({ kind: 'expired' });
    expect(iam.puts).toBe(0);
    expect(iam.text()).toBeUndefined();
  });

  it('keeps roles apart: a deny on one role never lands in another', async () => {
    const { list } = await replica();
    const a = session('a');
    const other: RoleTarget = { ...target(), roleArn: 'arn:aws:iam::123456789012:role/other' };
    await list.deny(target(), a, clock);
    await list.deny(other, session('o'), clock);
    expect(iam.listedIds()).toEqual([a.sessionId]);
    expect(
      parseDenyDocument(iam.policies.get(`other/${POLICY_NAME}`)).sessions.map((s) => s.sessionId),
    ).toEqual([`${ROLE_ID}:tl-o`]);
  });

  // Regression: a writer whose lock lapsed during a slow put could land over a newer write; the retry then
  // trusted `applied` and never rewrote. A lost write now marks the role for a rewrite.
  it('loses no session when a writer whose lock lapsed lands its write late', async () => {
    const first = await replica();
    const second = await replica();
    const a = session('a');
    const b = session('b');
    let secondOutcome: unknown;
    let intercepted = false;
    iam.beforePut = async () => {
      if (intercepted) return;
      intercepted = true;
      // The first writer's put hangs past its lock's 30 s: the lock expires (deleted here, to not wait) ...
      await first.redis.del(keys.awsDenyLock(POLICY_NAME, ROLE_ARN));
      // ... and another replica revokes meanwhile, before the hung put finally lands.
      secondOutcome = await second.list.deny(target(), b, clock);
    };

    // The late writer finds it lost the lock, marks the role for a rewrite, and rewrites before answering.
    await expect(first.list.deny(target(), a, clock)).resolves.toEqual({ kind: 'listed' });
    expect(secondOutcome).toEqual({ kind: 'listed' });
    expect(iam.listedIds()).toEqual(sorted([a, b]));
  });
});
