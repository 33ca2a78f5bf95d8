import { randomBytes } from 'node:crypto';
import { Cluster, type Redis } from 'ioredis';
import { approvalFields } from '../../src/approvals/approval-store';
import type { Approval } from '../../src/approvals/approval';
import { identityKey } from '../../src/domain/types';
import { hashFields } from '../../src/redis/hash-fields';
import { hashTagOf, type RedisKeys } from '../../src/redis/keys';
import type { RedisClient } from '../../src/redis/redis-client';
import { runScript, type ScriptName } from '../../src/redis/scripts';

/**
 * One direct case per Lua script (src/redis/scripts), each run through `runScript` the way its caller runs it,
 * asserting the answers the caller relies on and the state left behind (read back with plain commands).
 * Every run goes through `checkedRun`, which also asserts the script touched no key outside the KEYS it was
 * given: nothing under the prefix created, deleted or changed (DUMP and expiry compared before and after),
 * and no key read or written by any command the script ran (its commands seen through MONITOR, their keys
 * named by COMMAND GETKEYS). Each case owns the keys under `prefix`: with a hash-tagged prefix
 * (`{t-sc-…}:`) every key lands in one slot, so the same cases run on a Redis Cluster too.
 */
export interface ScriptCaseContext {
  redis: RedisClient;
  keys: RedisKeys;
  prefix: string;
}

export interface ScriptCase {
  script: ScriptName;
  name: string;
  run: (ctx: ScriptCaseContext) => Promise<void>;
}

// ---------------------------------------------------------------------------------------------------------
// The keyspace under a prefix, and what a script run touched
// ---------------------------------------------------------------------------------------------------------

/** The nodes that may hold the prefix's keys: the client itself, or every primary of a cluster. */
const nodesOf = (redis: RedisClient): Redis[] => (redis instanceof Cluster ? redis.nodes('master') : [redis]);

const globEscape = (text: string) => text.replace(/[*?[\]\\]/g, '\\$&');

async function scanNode(node: Redis, prefix: string): Promise<string[]> {
  const found: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await node.scan(cursor, 'MATCH', `${globEscape(prefix)}*`, 'COUNT', 1000);
    cursor = next;
    found.push(...batch);
  } while (cursor !== '0');
  return [...new Set(found)];
}

/** Every key under the prefix (on every primary of a cluster). */
export async function keysUnder(redis: RedisClient, prefix: string): Promise<string[]> {
  const perNode = await Promise.all(nodesOf(redis).map((node) => scanNode(node, prefix)));
  return perNode.flat().sort();
}

/** Deletes every key under the prefix (one key at a time: a cluster refuses nothing then). */
export async function deleteKeysUnder(redis: RedisClient, prefix: string): Promise<void> {
  for (const node of nodesOf(redis)) {
    const found = await scanNode(node, prefix);
    if (found.length === 0) continue;
    const pipeline = node.pipeline();
    for (const key of found) pipeline.del(key);
    await pipeline.exec();
  }
}

/** Each key under the prefix with its type, absolute expiry and serialised value: equal means unchanged. */
async function snapshot(redis: RedisClient, prefix: string): Promise<Map<string, string>> {
  const state = new Map<string, string>();
  for (const node of nodesOf(redis)) {
    const found = await scanNode(node, prefix);
    if (found.length === 0) continue;
    const pipeline = node.pipeline();
    for (const key of found) pipeline.type(key).pexpiretime(key).dumpBuffer(key);
    const replies = (await pipeline.exec()) ?? [];
    found.forEach((key, index) => {
      const [type, expiry, dump] = replies.slice(index * 3, index * 3 + 3).map(([error, reply]) => {
        if (error) throw error;
        return reply;
      });
      // Deleted between SCAN and DUMP (expired): as good as absent.
      if (type === 'none') return;
      state.set(key, `${String(type)}|${String(expiry)}|${(dump as Buffer).toString('hex')}`);
    });
  }
  return state;
}

interface Watcher {
  node: Redis;
  /** This connection's address as MONITOR shows it (`CLIENT INFO`'s addr). */
  address: string;
  monitor: Redis;
  seen: { source: string; args: string[] }[];
}

/**
 * Records, through MONITOR, the commands the next script this client runs executes inside Redis: on each
 * node, the `lua` lines that follow this connection's EVAL/EVALSHA (a script runs atomically, so nothing
 * else interleaves). `stop()` waits until MONITOR has shown everything this connection sent (an ECHO marker).
 */
async function watchScripts(redis: RedisClient) {
  const watchers: Watcher[] = await Promise.all(
    nodesOf(redis).map(async (node) => {
      const info = String(await node.client('INFO'));
      const address = /(?:^|\s)addr=(\S+)/.exec(info)?.[1];
      if (!address) throw new Error(`CLIENT INFO named no addr: ${info}`);
      const monitor = await node.monitor();
      const watcher: Watcher = { node, address, monitor, seen: [] };
      monitor.on('monitor', (_time: string, args: string[], source: string) =>
        watcher.seen.push({ source, args }),
      );
      return watcher;
    }),
  );

  const drain = async (watcher: Watcher) => {
    const marker = `script-case-${randomBytes(6).toString('hex')}`;
    const shown = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`MONITOR never showed ${marker}`)), 5_000);
      watcher.monitor.on('monitor', (_time: string, args: string[], source: string) => {
        if (source === watcher.address && args[0]?.toLowerCase() === 'echo' && args[1] === marker) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    await watcher.node.echo(marker);
    await shown;
  };

  return {
    /** The commands (name and arguments) the scripts this connection ran executed. */
    async stop(): Promise<string[][]> {
      try {
        await Promise.all(watchers.map(drain));
      } finally {
        for (const watcher of watchers) watcher.monitor.disconnect();
      }
      const commands: string[][] = [];
      for (const watcher of watchers) {
        let ours = false;
        for (const { source, args } of watcher.seen) {
          if (source === 'lua') {
            if (ours) commands.push(args);
            continue;
          }
          ours = source === watcher.address && /^eval(sha)?$/i.test(args[0] ?? '');
        }
      }
      return commands;
    },
  };
}

/** Every key the commands name, as Redis itself finds them (COMMAND GETKEYS). */
async function keysOfCommands(redis: RedisClient, commands: string[][]): Promise<string[]> {
  const node = nodesOf(redis)[0] as Redis;
  const named = await Promise.all(
    commands.map((command) => node.call('COMMAND', 'GETKEYS', ...command) as Promise<string[]>),
  );
  return [...new Set(named.flat())].sort();
}

export interface CheckedRun {
  reply: unknown;
  /** Keys under the prefix created, deleted or changed (value or expiry) by the run, sorted. */
  changed: string[];
  /** Keys read or written by the commands the script ran, sorted. */
  touched: string[];
}

let recordedRuns: ScriptName[] = [];

/** The scripts run through `checkedRun` since the last call (the runner checks a case ran its own script). */
export function takeRecordedRuns(): ScriptName[] {
  const runs = recordedRuns;
  recordedRuns = [];
  return runs;
}

/**
 * Runs a script through `runScript` and asserts it touched only the KEYS passed: each of them under the
 * prefix (and in its hash tag's slot), no other key under the prefix changed, and no command it ran named a
 * key outside them.
 */
export async function checkedRun(
  ctx: ScriptCaseContext,
  script: ScriptName,
  keys: readonly string[],
  args: readonly (string | number)[],
): Promise<CheckedRun> {
  recordedRuns.push(script);
  const tag = hashTagOf(ctx.prefix);
  expect({ script, foreign: keys.filter((key) => !key.startsWith(ctx.prefix)) }).toEqual({
    script,
    foreign: [],
  });
  if (tag) expect({ script, tags: [...new Set(keys.map(hashTagOf))] }).toEqual({ script, tags: [tag] });

  const before = await snapshot(ctx.redis, ctx.prefix);
  const watch = await watchScripts(ctx.redis);
  let reply: unknown;
  let commands: string[][];
  try {
    reply = await runScript(ctx.redis, script, keys, args);
  } finally {
    commands = await watch.stop();
  }
  const after = await snapshot(ctx.redis, ctx.prefix);

  const changed = [...new Set([...before.keys(), ...after.keys()])]
    .filter((key) => before.get(key) !== after.get(key))
    .sort();
  const touched = await keysOfCommands(ctx.redis, commands);
  const declared = new Set(keys);
  expect({ script, ranCommands: commands.length > 0 }).toEqual({ script, ranCommands: true });
  expect({ script, changedOutsideKeys: changed.filter((key) => !declared.has(key)) }).toEqual({
    script,
    changedOutsideKeys: [],
  });
  expect({ script, touchedOutsideKeys: touched.filter((key) => !declared.has(key)) }).toEqual({
    script,
    touchedOutsideKeys: [],
  });
  return { reply, changed, touched };
}

// ---------------------------------------------------------------------------------------------------------
// Fixtures, shaped like what the stores write
// ---------------------------------------------------------------------------------------------------------

/** The cases' "now": every time a script compares is relative to it; key expiries are real times after it. */
const T0 = Date.now();
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

const sorted = (...keys: string[]) => [...keys].sort();
const record = (fields: string[]) => {
  const out: Record<string, string> = {};
  for (let i = 0; i < fields.length; i += 2) out[fields[i] as string] = fields[i + 1] as string;
  return out;
};
const event = (type: string, detail: Record<string, unknown> = {}) => JSON.stringify({ type, ...detail });

/** The audit events appended so far, as the `event` field of each stream entry. */
async function auditEvents(ctx: ScriptCaseContext): Promise<string[]> {
  const entries = await ctx.redis.xrange(ctx.keys.audit(), '-', '+');
  return entries.map(([, fields]) => record(fields).event as string);
}

const members = async (ctx: ScriptCaseContext, key: string) => (await ctx.redis.smembers(key)).sort();

type LeaseRecord = {
  id: string;
  taskId: string;
  grant: string;
  provider: string;
  issuer: string;
  subject: string;
  state: string;
  createdAtMs: number;
  expiresAtMs: number;
  handle: string;
  credentialSha256: string;
  attempts: number;
  revokeReason?: string;
  lastError?: string;
};

/** A lease as lease-store serialises it. */
const lease = (id: string, overrides: Partial<LeaseRecord> = {}): LeaseRecord => ({
  id,
  taskId: 'task-1',
  grant: 'artifacts-read',
  provider: 'jwt',
  issuer: 'agents',
  subject: 'ci-bot',
  state: 'active',
  createdAtMs: T0,
  expiresAtMs: T0 + 10 * MINUTE,
  handle: JSON.stringify({ jti: id }),
  credentialSha256: 'c0ffee',
  attempts: 0,
  ...overrides,
});

async function seedLease(ctx: ScriptCaseContext, value: LeaseRecord): Promise<string> {
  const key = ctx.keys.lease(value.id);
  await ctx.redis.hset(key, record(hashFields(value)));
  return key;
}

/** A task hash as task-store writes it, open for an hour, its key kept two hours. */
async function seedTask(
  ctx: ScriptCaseContext,
  id: string,
  overrides: Record<string, string | number> = {},
): Promise<string> {
  const key = ctx.keys.task(id);
  await ctx.redis.hset(key, {
    id,
    issuer: 'agents',
    subject: 'ci-bot',
    purpose: 'deploy',
    createdAtMs: T0,
    expiresAtMs: T0 + HOUR,
    state: 'open',
    activeLeases: 0,
    ...overrides,
  });
  await ctx.redis.pexpireat(key, T0 + 2 * HOUR);
  return key;
}

/** lease-store's createKeys: createLease and restoreLease take these. */
const createKeys = (keys: RedisKeys, value: LeaseRecord, approvalId = '') => [
  keys.lease(value.id),
  keys.task(value.taskId),
  keys.taskLeases(value.taskId),
  keys.identityLeases(identityKey(value.issuer, value.subject)),
  keys.grantLeases(value.grant),
  keys.due(),
  keys.audit(),
  keys.identityUnsettled(identityKey(value.issuer, value.subject)),
  keys.approval(approvalId),
  keys.approvalsDue(),
];

const issued = (value: LeaseRecord) => event('credential.issued', { leaseId: value.id });
const revokeRequested = (id: string) => event('lease.revoke_requested', { lease: id });

const createArgs = (
  value: LeaseRecord,
  options: { nowMs?: number; cap?: number; identityCap?: number; taskCap?: number; approvalId?: string } = {},
) => [
  options.cap ?? 1000,
  options.nowMs ?? T0,
  value.expiresAtMs,
  value.id,
  issued(value),
  options.identityCap ?? 0,
  options.taskCap ?? 0,
  options.approvalId ?? '',
  ...hashFields(value),
];

/** lease-store's settle keys. */
const settleKeys = (keys: RedisKeys, value: LeaseRecord) => [
  keys.lease(value.id),
  keys.due(),
  keys.irrevocable(),
  keys.task(value.taskId),
  keys.settled(),
  keys.identityUnsettled(identityKey(value.issuer, value.subject)),
  keys.audit(),
];

/** lease-store's purgeSettled keys. */
const purgeKeys = (keys: RedisKeys, value: LeaseRecord) => [
  keys.settled(),
  keys.lease(value.id),
  keys.taskLeases(value.taskId),
  keys.identityLeases(identityKey(value.issuer, value.subject)),
  keys.grantLeases(value.grant),
];

const approval = (id: string, overrides: Partial<Approval> = {}): Approval => ({
  id,
  kind: 'step-up',
  status: 'pending',
  createdAtMs: T0,
  expiresAtMs: T0 + 15 * MINUTE,
  requester: { issuer: 'agents', subject: 'ci-bot' },
  reason: 'hotfix',
  taskId: 'task-1',
  grant: 'deploy',
  ttlSeconds: 300,
  summary: 'deploy for task-1',
  ...overrides,
});

/** An approval hash as the approval store writes it, in the due index by its deadline. */
async function seedApproval(ctx: ScriptCaseContext, value: Approval, due = true): Promise<string> {
  const key = ctx.keys.approval(value.id);
  await ctx.redis.hset(key, record(approvalFields(value)));
  await ctx.redis.pexpireat(key, T0 + DAY);
  if (due) await ctx.redis.zadd(ctx.keys.approvalsDue(), value.expiresAtMs, value.id);
  return key;
}

const ROLE = { policy: 'tasklease-deny', arn: 'arn:aws:iam::123456789012:role/deploy' };
const STATE_TTL_MS = 25 * HOUR;

// ---------------------------------------------------------------------------------------------------------
// The cases
// ---------------------------------------------------------------------------------------------------------

export const SCRIPT_CASES: ScriptCase[] = [
  {
    script: 'appendSeal',
    name: 'appends a seal only on top of the newest one the sealer read (compare-and-set)',
    async run(ctx) {
      const seals = ctx.keys.auditSeals();
      const append = (previous: string, id: string, jws: string) =>
        checkedRun(ctx, 'appendSeal', [seals], [previous, id, jws]);

      const first = await append('', `${T0}-0`, 'jws-1');
      expect(first.reply).toBe(1);
      expect(first.changed).toEqual([seals]);
      // A second sealer that also read "no seal yet" lost the race: its seal is dropped.
      const rival = await append('', `${T0}-1`, 'jws-rival');
      expect(rival).toMatchObject({ reply: 0, changed: [] });
      const second = await append(`${T0}-0`, `${T0 + 5}-3`, 'jws-2');
      expect(second).toMatchObject({ reply: 1, changed: [seals] });
      // One that read the first seal, after the second was appended.
      const stale = await append(`${T0}-0`, `${T0 + 9}-0`, 'jws-stale');
      expect(stale).toMatchObject({ reply: 0, changed: [] });

      expect(await ctx.redis.xrange(seals, '-', '+')).toEqual([
        [`${T0}-0`, ['seal', 'jws-1']],
        [`${T0 + 5}-3`, ['seal', 'jws-2']],
      ]);
    },
  },

  {
    script: 'commitWrite',
    name: 'a write finished after its lock was lost marks the role for a rewrite and changes nothing else',
    async run(ctx) {
      const state = ctx.keys.awsDenyState(ROLE.policy, ROLE.arn);
      const lock = ctx.keys.awsDenyLock(ROLE.policy, ROLE.arn);
      await ctx.redis.hset(state, {
        seq: 2,
        applied: 1,
        's:a': `1|${T0 + HOUR}|${T0}`,
        's:b': `2|${T0 + HOUR}|${T0}`,
      });
      await ctx.redis.pexpire(state, STATE_TTL_MS);
      await ctx.redis.set(lock, 'other-writer', 'PX', 30_000);
      const commit = (token: string) =>
        checkedRun(ctx, 'commitWrite', [state, lock], [token, 2, T0, STATE_TTL_MS, 0, 's:a']);

      const taken = await commit('mine');
      expect(taken).toMatchObject({ reply: 'lost', changed: [state] });
      expect(await ctx.redis.hgetall(state)).toEqual({
        seq: '2',
        applied: '1',
        's:a': `1|${T0 + HOUR}|${T0}`,
        's:b': `2|${T0 + HOUR}|${T0}`,
        lost: '1',
      });
      expect(await ctx.redis.get(lock)).toBe('other-writer');

      // The lock lapsed and nobody took it: still lost.
      await ctx.redis.del(lock);
      expect((await commit('mine')).reply).toBe('lost');
      expect(await ctx.redis.hget(state, 'lost')).toBe('2');
      expect(await ctx.redis.exists(lock)).toBe(0);
    },
  },

  {
    script: 'commitWrite',
    name: 'a write under the lock records what IAM has, drops the written sessions and releases the lock',
    async run(ctx) {
      const state = ctx.keys.awsDenyState(ROLE.policy, ROLE.arn);
      const lock = ctx.keys.awsDenyLock(ROLE.policy, ROLE.arn);
      const session = (seq: number) => `${seq}|${T0 + HOUR}|${T0}`;
      await ctx.redis.hset(state, {
        seq: 3,
        applied: 1,
        lost: 2,
        cleanAt: 0,
        cutoffMs: 100,
        's:a': session(1),
        's:b': session(2),
        's:c': session(3),
      });
      await ctx.redis.pexpire(state, 60_000);
      await ctx.redis.set(lock, 'mine', 'PX', 30_000);

      const done = await checkedRun(
        ctx,
        'commitWrite',
        [state, lock],
        ['mine', 3, T0 - MINUTE, STATE_TTL_MS, 2, 's:a', 's:c'],
      );
      expect(done).toMatchObject({ reply: 'ok', changed: sorted(state, lock) });
      expect(await ctx.redis.hgetall(state)).toEqual({
        seq: '3',
        applied: '3',
        lost: '2',
        cleanAt: '2',
        cutoffMs: String(T0 - MINUTE),
        's:b': session(2),
      });
      expect(await ctx.redis.pttl(state)).toBeGreaterThan(60_000);
      expect(await ctx.redis.pttl(state)).toBeLessThanOrEqual(STATE_TTL_MS);
      expect(await ctx.redis.exists(lock)).toBe(0);

      // An older write committing later never moves `applied` or `cleanAt` back.
      await ctx.redis.set(lock, 'next', 'PX', 30_000);
      const older = await checkedRun(
        ctx,
        'commitWrite',
        [state, lock],
        ['next', 2, T0 - MINUTE, STATE_TTL_MS, 1],
      );
      expect(older.reply).toBe('ok');
      expect(await ctx.redis.hmget(state, 'applied', 'cleanAt', 's:b')).toEqual(['3', '2', session(2)]);
    },
  },

  {
    script: 'completeTask',
    name: 'closes an open task once, freeing its open-task place: completed, then already; missing stays missing',
    async run(ctx) {
      const task = await seedTask(ctx, 'task-1', { activeLeases: 2 });
      const missingTask = ctx.keys.task('no-such-task');
      const open = ctx.keys.identityOpenTasks(identityKey('agents', 'ci-bot'));
      await ctx.redis.zadd(open, T0 + HOUR, 'task-1', T0 + HOUR, 'task-2');
      const args = (outcome: string, summary: string, atMs: number) => [outcome, summary, atMs, 'task-1'];

      const missing = await checkedRun(
        ctx,
        'completeTask',
        [missingTask, open],
        ['success', 'done', T0, 'x'],
      );
      expect(missing).toMatchObject({ reply: 'missing', changed: [] });

      const completed = await checkedRun(
        ctx,
        'completeTask',
        [task, open],
        args('success', 'shipped it', T0 + 1),
      );
      expect(completed).toMatchObject({ reply: 'completed', changed: [open, task].sort() });
      expect(await ctx.redis.hgetall(task)).toMatchObject({
        state: 'completed',
        outcome: 'success',
        summary: 'shipped it',
        completedAtMs: String(T0 + 1),
        activeLeases: '2',
      });
      expect(await ctx.redis.pexpiretime(task)).toBe(T0 + 2 * HOUR);
      expect(await ctx.redis.zrange(open, 0, -1)).toEqual(['task-2']);

      const again = await checkedRun(ctx, 'completeTask', [task, open], args('failure', 'again', T0 + 2));
      expect(again).toMatchObject({ reply: 'already', changed: [] });
      expect(await ctx.redis.hmget(task, 'outcome', 'summary')).toEqual(['success', 'shipped it']);
    },
  },

  {
    script: 'countStates',
    name: 'counts leases by state (a missing one as purged), the retrying ones, and names the first irrevocable',
    async run(ctx) {
      const seeded: [string, Partial<LeaseRecord> | null][] = [
        ['l-active', { state: 'active' }],
        ['l-irrevocable-1', { state: 'irrevocable', attempts: 3 }],
        ['l-active-retrying', { state: 'active', attempts: 2 }],
        ['l-purged', null],
        ['l-revoking-retrying', { state: 'revoking', attempts: 1 }],
        ['l-irrevocable-2', { state: 'irrevocable', attempts: 5 }],
        ['l-revoked', { state: 'revoked' }],
        ['l-revoking', { state: 'revoking' }],
        ['l-irrevocable-3', { state: 'irrevocable', attempts: 1 }],
      ];
      for (const [id, overrides] of seeded) if (overrides) await seedLease(ctx, lease(id, overrides));
      const leaseKeys = seeded.map(([id]) => ctx.keys.lease(id));

      const counted = await checkedRun(ctx, 'countStates', leaseKeys, [2]);
      expect(counted.changed).toEqual([]);
      const [flat, retrying, irrevocable] = counted.reply as [(string | number)[], number, number[]];
      // By state, in the order each state is first met.
      expect(flat).toEqual(['active', 2, 'irrevocable', 3, 'purged', 1, 'revoking', 2, 'revoked', 1]);
      expect(retrying).toBe(2);
      // 1-based KEYS indexes of the first two irrevocable leases.
      expect(irrevocable).toEqual([2, 6]);
      expect(await ctx.redis.exists(ctx.keys.lease('l-purged'))).toBe(0);

      const none = await checkedRun(ctx, 'countStates', leaseKeys.slice(0, 3), [0]);
      expect(none).toMatchObject({ reply: [['active', 2, 'irrevocable', 1], 1, []], changed: [] });
    },
  },

  {
    script: 'createApproval',
    name: 'writes a request with its index entries, expiry and audit event once; a second write is refused',
    async run(ctx) {
      const request = approval('ap-1', {
        kind: 'enrolment',
        taskId: undefined,
        grant: undefined,
        ttlSeconds: undefined,
      });
      const key = ctx.keys.approval(request.id);
      const keyList = [key, ctx.keys.approvals(), ctx.keys.approvalsDue(), ctx.keys.audit()];
      const requested = event('approval.requested', { approvalId: request.id });
      const keyExpireAtMs = T0 + 2 * DAY;
      const args = [
        T0,
        request.expiresAtMs,
        request.id,
        requested,
        keyExpireAtMs,
        '',
        0,
        0,
        ...approvalFields(request),
      ];

      const created = await checkedRun(ctx, 'createApproval', keyList, args);
      expect(created).toMatchObject({ reply: 'ok', changed: sorted(...keyList) });
      expect(await ctx.redis.hgetall(key)).toEqual(record(approvalFields(request)));
      expect(await ctx.redis.pexpiretime(key)).toBe(keyExpireAtMs);
      expect(await ctx.redis.zscore(ctx.keys.approvals(), request.id)).toBe(String(T0));
      expect(await ctx.redis.zscore(ctx.keys.approvalsDue(), request.id)).toBe(String(request.expiresAtMs));
      expect(await auditEvents(ctx)).toEqual([requested]);

      const again = await checkedRun(ctx, 'createApproval', keyList, args);
      expect(again).toMatchObject({ reply: 'exists', changed: [] });
    },
  },

  {
    script: 'createApproval',
    name: 'a step-up request answers the open request of its task that covers it, or stale when the set moved',
    async run(ctx) {
      const taskApprovals = ctx.keys.taskApprovals('task-1');
      const keyExpireAtMs = T0 + DAY;
      /** What approval-store sends: the task's requests as it read them (ids and keys). */
      const ask = (request: Approval, others: string[]) => {
        const keyList = [
          ctx.keys.approval(request.id),
          ctx.keys.approvals(),
          ctx.keys.approvalsDue(),
          ctx.keys.audit(),
          taskApprovals,
          ...others.map((id) => ctx.keys.approval(id)),
        ];
        const head = [
          request.createdAtMs,
          request.expiresAtMs,
          request.id,
          event('approval.requested', { approvalId: request.id }),
        ];
        const args = [
          ...head,
          keyExpireAtMs,
          request.grant ?? '',
          request.ttlSeconds ?? 0,
          others.length,
          ...others,
        ];
        return checkedRun(ctx, 'createApproval', keyList, [...args, ...approvalFields(request)]);
      };

      const first = await ask(approval('ap-1', { ttlSeconds: 300 }), []);
      expect(first.reply).toBe('ok');
      expect(first.changed).toEqual(
        sorted(
          ctx.keys.approval('ap-1'),
          ctx.keys.approvals(),
          ctx.keys.approvalsDue(),
          ctx.keys.audit(),
          taskApprovals,
        ),
      );
      expect(await members(ctx, taskApprovals)).toEqual(['ap-1']);
      expect(await ctx.redis.pexpiretime(taskApprovals)).toBe(keyExpireAtMs);

      // Read before ap-1 was added: the caller must read again.
      expect(await ask(approval('ap-2'), [])).toMatchObject({ reply: 'stale', changed: [] });
      expect(await ask(approval('ap-2'), ['ap-9'])).toMatchObject({ reply: 'stale', changed: [] });
      // ap-1 (pending, same grant, at least this TTL) covers it.
      expect(await ask(approval('ap-2', { ttlSeconds: 120 }), ['ap-1'])).toMatchObject({
        reply: 'open:ap-1',
        changed: [],
      });
      expect(await ctx.redis.exists(ctx.keys.approval('ap-2'))).toBe(0);
      // A longer TTL or another grant is not covered: a request of its own.
      expect((await ask(approval('ap-3', { ttlSeconds: 600 }), ['ap-1'])).reply).toBe('ok');
      expect((await ask(approval('ap-4', { grant: 'db-admin' }), ['ap-1', 'ap-3'])).reply).toBe('ok');
      expect(await members(ctx, taskApprovals)).toEqual(['ap-1', 'ap-3', 'ap-4']);

      // Approved still covers; denied or past its deadline does not.
      await ctx.redis.hset(ctx.keys.approval('ap-1'), 'status', 'approved');
      expect((await ask(approval('ap-5'), ['ap-1', 'ap-3', 'ap-4'])).reply).toBe('open:ap-1');
      await ctx.redis.hset(ctx.keys.approval('ap-1'), 'status', 'denied');
      await ctx.redis.hset(ctx.keys.approval('ap-3'), 'expiresAtMs', T0);
      expect((await ask(approval('ap-5'), ['ap-1', 'ap-3', 'ap-4'])).reply).toBe('ok');
      expect(await ctx.redis.zrange(ctx.keys.approvals(), 0, -1)).toEqual(['ap-1', 'ap-3', 'ap-4', 'ap-5']);
      expect(await auditEvents(ctx)).toHaveLength(4);
    },
  },

  {
    script: 'createLease',
    name: 'writes the lease, its indexes, due entry, active count and audit event in one step; then exists',
    async run(ctx) {
      const task = await seedTask(ctx, 'task-1');
      const value = lease('l-1');
      const keyList = createKeys(ctx.keys, value);
      const [leaseKey, , taskLeases, identityLeases, grantLeases, due, audit, unsettled, noApproval] =
        keyList as string[];

      const created = await checkedRun(ctx, 'createLease', keyList, createArgs(value));
      expect(created.reply).toBe('ok');
      // Without an approval its key is named but never touched.
      expect(created.changed).toEqual(
        sorted(leaseKey!, task, taskLeases!, identityLeases!, grantLeases!, due!, audit!, unsettled!),
      );
      expect(created.touched).not.toContain(noApproval);
      expect(await ctx.redis.hgetall(leaseKey!)).toEqual(record(hashFields(value)));
      for (const index of [taskLeases!, identityLeases!, grantLeases!, unsettled!])
        expect(await members(ctx, index)).toEqual(['l-1']);
      // The task's lease index lives as long as the task.
      const taskExpiry = await ctx.redis.pexpiretime(task);
      expect(Math.abs((await ctx.redis.pexpiretime(taskLeases!)) - taskExpiry)).toBeLessThan(1000);
      expect(await ctx.redis.zscore(due!, 'l-1')).toBe(String(value.expiresAtMs));
      expect(await ctx.redis.hget(task, 'activeLeases')).toBe('1');
      expect(await auditEvents(ctx)).toEqual([issued(value)]);

      const again = await checkedRun(ctx, 'createLease', keyList, createArgs(value));
      expect(again).toMatchObject({ reply: 'exists', changed: [] });
      expect(await ctx.redis.hget(task, 'activeLeases')).toBe('1');
    },
  },

  {
    script: 'createLease',
    name: 'refuses without writing: task not open (missing, closed, past expiry), cap, task_cap, identity_cap',
    async run(ctx) {
      const attempt = async (value: LeaseRecord, options: Parameters<typeof createArgs>[1] = {}) => {
        const run = await checkedRun(
          ctx,
          'createLease',
          createKeys(ctx.keys, value),
          createArgs(value, options),
        );
        expect(run.changed).toEqual([]);
        expect(await ctx.redis.exists(ctx.keys.lease(value.id))).toBe(0);
        return run.reply;
      };

      expect(await attempt(lease('l-1', { taskId: 'no-such-task' }))).toBe('task_not_open');
      expect(await ctx.redis.exists(ctx.keys.task('no-such-task'))).toBe(0);
      await seedTask(ctx, 'task-closed', { state: 'completed' });
      expect(await attempt(lease('l-2', { taskId: 'task-closed' }))).toBe('task_not_open');
      await seedTask(ctx, 'task-1', { activeLeases: 1 });
      // A task is open until strictly before its expiry.
      expect(await attempt(lease('l-3'), { nowMs: T0 + HOUR })).toBe('task_not_open');

      // Unsettled leases in total: every entry of the due index counts.
      await ctx.redis.zadd(ctx.keys.due(), T0 + MINUTE, 'other-1', T0 + MINUTE, 'other-2');
      expect(await attempt(lease('l-4'), { cap: 2 })).toBe('cap');
      expect(await attempt(lease('l-5'), { cap: 3, taskCap: 1 })).toBe('task_cap');
      await ctx.redis.sadd(ctx.keys.identityUnsettled(identityKey('agents', 'ci-bot')), 'other-1');
      expect(await attempt(lease('l-6'), { cap: 3, taskCap: 2, identityCap: 1 })).toBe('identity_cap');
      // Another identity is not held to this one's quota.
      const other = await checkedRun(
        ctx,
        'createLease',
        createKeys(ctx.keys, lease('l-7', { subject: 'other-bot' })),
        createArgs(lease('l-7', { subject: 'other-bot' }), { cap: 3, taskCap: 2, identityCap: 1 }),
      );
      expect(other.reply).toBe('ok');
      expect(await ctx.redis.hget(ctx.keys.task('task-1'), 'activeLeases')).toBe('2');
    },
  },

  {
    script: 'createLease',
    name: 'uses up a presented step-up approval only when approved and unexpired; it gives one lease',
    async run(ctx) {
      const task = await seedTask(ctx, 'task-1');
      await seedApproval(ctx, approval('ap-pending'));
      await seedApproval(ctx, approval('ap-denied', { status: 'denied' }), false);
      await seedApproval(ctx, approval('ap-used', { status: 'used' }), false);
      await seedApproval(ctx, approval('ap-expired', { status: 'approved', expiresAtMs: T0 }));
      const approved = await seedApproval(ctx, approval('ap-ok', { status: 'approved' }));
      const refused = async (leaseId: string, approvalId: string) => {
        const value = lease(leaseId);
        const run = await checkedRun(
          ctx,
          'createLease',
          createKeys(ctx.keys, value, approvalId),
          createArgs(value, { approvalId }),
        );
        expect(run.changed).toEqual([]);
        return run.reply;
      };

      expect(await refused('l-1', 'ap-missing')).toBe('approval_missing');
      expect(await refused('l-2', 'ap-pending')).toBe('approval_pending');
      expect(await refused('l-3', 'ap-denied')).toBe('approval_denied');
      expect(await refused('l-4', 'ap-used')).toBe('approval_used');
      expect(await refused('l-5', 'ap-expired')).toBe('approval_expired');

      const value = lease('l-6');
      const keyList = createKeys(ctx.keys, value, 'ap-ok');
      const used = await checkedRun(ctx, 'createLease', keyList, createArgs(value, { approvalId: 'ap-ok' }));
      expect(used.reply).toBe('ok');
      expect(used.changed).toEqual(sorted(...keyList));
      expect(await ctx.redis.hmget(approved, 'status', 'usedAtMs', 'leaseId')).toEqual([
        'used',
        String(T0),
        'l-6',
      ]);
      expect(await ctx.redis.zrange(ctx.keys.approvalsDue(), 0, -1)).toEqual(['ap-expired', 'ap-pending']);
      expect(await ctx.redis.hget(task, 'activeLeases')).toBe('1');

      // A second call racing with the same approval gets nothing.
      expect(await refused('l-7', 'ap-ok')).toBe('approval_used');
    },
  },

  {
    script: 'createTask',
    name: 'creates a task with its expiry unless it exists, within its identity’s quota of open tasks',
    async run(ctx) {
      const open = ctx.keys.identityOpenTasks(identityKey('agents', 'ci-bot'));
      const expiresAtMs = T0 + HOUR;
      const expireAtSeconds = Math.ceil((T0 + 2 * HOUR) / 1000);
      const fields = (id: string, purpose: string) => ['id', id, 'state', 'open', 'purpose', purpose];
      const create = (id: string, quota: number, purpose = 'first', nowMs = T0, expiry = expiresAtMs) =>
        checkedRun(
          ctx,
          'createTask',
          [ctx.keys.task(id), open],
          [quota, nowMs, id, expiry, expireAtSeconds, ...fields(id, purpose)],
        );

      const created = await create('job-123', 2);
      expect(created).toMatchObject({ reply: 'created', changed: [open, ctx.keys.task('job-123')].sort() });
      expect(await ctx.redis.hgetall(ctx.keys.task('job-123'))).toEqual(record(fields('job-123', 'first')));
      expect(await ctx.redis.expiretime(ctx.keys.task('job-123'))).toBe(expireAtSeconds);
      expect(await ctx.redis.zrange(open, 0, -1, 'WITHSCORES')).toEqual(['job-123', String(expiresAtMs)]);
      // The index lives as long as its latest task.
      expect(await ctx.redis.pexpiretime(open)).toBe(expiresAtMs);

      // The first creator wins; the second changes nothing and takes no place.
      const second = await create('job-123', 2, 'second');
      expect(second).toMatchObject({ reply: 'exists', changed: [] });
      expect(await ctx.redis.hget(ctx.keys.task('job-123'), 'purpose')).toBe('first');

      // A later task with a later expiry takes the second place and carries the index's expiry further.
      expect((await create('task-2', 2, 'first', T0, expiresAtMs + HOUR)).reply).toBe('created');
      expect(await ctx.redis.pexpiretime(open)).toBe(expiresAtMs + HOUR);
      const refused = await create('task-3', 2);
      expect(refused).toMatchObject({ reply: 'task_quota', changed: [] });
      expect(await ctx.redis.exists(ctx.keys.task('task-3'))).toBe(0);
      // Quota 0 is none.
      expect((await create('task-4', 0, 'first', T0, expiresAtMs + HOUR)).reply).toBe('created');

      // Once job-123 is past its expiry it holds no place: pruned, and the new task fits under quota 3.
      const later = await create('task-5', 3, 'first', expiresAtMs, expiresAtMs + HOUR);
      expect(later.reply).toBe('created');
      expect(await ctx.redis.zrange(open, 0, -1)).toEqual(['task-2', 'task-4', 'task-5']);
    },
  },

  {
    script: 'decideApproval',
    name: 'approves a pending step-up once, moving its deadline; never by its requester, never twice',
    async run(ctx) {
      const request = approval('ap-1');
      const key = await seedApproval(ctx, request);
      const keyList = (id: string) => [ctx.keys.approval(id), ctx.keys.approvalsDue(), ctx.keys.audit()];
      const decided = event('approval.decided', { approvalId: 'ap-1' });
      const decide = (id: string, status: string, by: string, expiresAtMs: number | '') =>
        checkedRun(ctx, 'decideApproval', keyList(id), [
          status,
          by,
          T0 + MINUTE,
          'looks right',
          expiresAtMs,
          decided,
        ]);

      expect(await decide('ap-missing', 'approved', 'corp/approver@example.com', '')).toMatchObject({
        reply: 'missing',
        changed: [],
      });
      expect(await decide('ap-1', 'approved', 'agents/ci-bot', T0 + 30 * MINUTE)).toMatchObject({
        reply: 'self',
        changed: [],
      });

      const ok = await decide('ap-1', 'approved', 'corp/approver@example.com', T0 + 30 * MINUTE);
      expect(ok).toMatchObject({ reply: 'ok', changed: sorted(...keyList('ap-1')) });
      expect(await ctx.redis.hgetall(key)).toMatchObject({
        status: 'approved',
        decidedBy: 'corp/approver@example.com',
        decidedAtMs: String(T0 + MINUTE),
        decisionReason: 'looks right',
        expiresAtMs: String(T0 + 30 * MINUTE),
      });
      // Due again by its use-by time.
      expect(await ctx.redis.zscore(ctx.keys.approvalsDue(), 'ap-1')).toBe(String(T0 + 30 * MINUTE));
      expect(await auditEvents(ctx)).toEqual([decided]);

      expect(await decide('ap-1', 'denied', 'corp/oncall@example.com', '')).toMatchObject({
        reply: 'approved',
        changed: [],
      });
    },
  },

  {
    script: 'decideApproval',
    name: 'a denial leaves the due index; a pending request past its deadline can no longer be decided',
    async run(ctx) {
      const keyList = (id: string) => [ctx.keys.approval(id), ctx.keys.approvalsDue(), ctx.keys.audit()];
      const enrolment = approval('ap-1', { kind: 'enrolment', expiresAtMs: T0 + DAY });
      await seedApproval(ctx, enrolment);
      await seedApproval(ctx, approval('ap-late', { expiresAtMs: T0 + MINUTE }));
      const decide = (id: string, atMs: number) =>
        checkedRun(ctx, 'decideApproval', keyList(id), [
          'denied',
          'corp/approver@example.com',
          atMs,
          'no',
          '',
          event('approval.decided'),
        ]);

      const denied = await decide('ap-1', T0 + MINUTE);
      expect(denied).toMatchObject({ reply: 'ok', changed: sorted(...keyList('ap-1')) });
      expect(await ctx.redis.hmget(ctx.keys.approval('ap-1'), 'status', 'expiresAtMs')).toEqual([
        'denied',
        String(T0 + DAY),
      ]);
      expect(await ctx.redis.zscore(ctx.keys.approvalsDue(), 'ap-1')).toBeNull();

      // At its deadline exactly it is expired (the sweeper writes that down).
      expect(await decide('ap-late', T0 + MINUTE)).toMatchObject({ reply: 'expired', changed: [] });
      expect(await ctx.redis.hget(ctx.keys.approval('ap-late'), 'status')).toBe('pending');
      expect(await ctx.redis.zscore(ctx.keys.approvalsDue(), 'ap-late')).toBe(String(T0 + MINUTE));
      expect(await decide('ap-1', T0 + 2 * MINUTE)).toMatchObject({ reply: 'denied', changed: [] });
    },
  },

  {
    script: 'expireApproval',
    name: 'writes down lapsed pending and unused step-up approvals; anything else only leaves the due index',
    async run(ctx) {
      const due = ctx.keys.approvalsDue();
      const expired = event('approval.expired');
      const expire = (id: string) =>
        checkedRun(ctx, 'expireApproval', [ctx.keys.approval(id), due, ctx.keys.audit()], [id, T0, expired]);
      await ctx.redis.zadd(due, T0 - MINUTE, 'ap-gone');
      await seedApproval(ctx, approval('ap-future'));
      await seedApproval(ctx, approval('ap-lapsed', { expiresAtMs: T0 }));
      await seedApproval(ctx, approval('ap-unused', { status: 'approved', expiresAtMs: T0 - 1 }));
      await seedApproval(
        ctx,
        approval('ap-approved-later', { status: 'approved', expiresAtMs: T0 + MINUTE }),
      );
      await seedApproval(
        ctx,
        approval('ap-enrolment', { kind: 'enrolment', status: 'approved', expiresAtMs: T0 - 1 }),
      );
      await seedApproval(ctx, approval('ap-used', { status: 'used', expiresAtMs: T0 - 1 }));

      expect(await expire('ap-gone')).toMatchObject({ reply: 'missing', changed: [due] });
      expect(await ctx.redis.exists(ctx.keys.approval('ap-gone'))).toBe(0);
      expect(await expire('ap-future')).toMatchObject({ reply: 'not-due', changed: [] });
      expect(await expire('ap-approved-later')).toMatchObject({ reply: 'not-due', changed: [] });

      for (const id of ['ap-lapsed', 'ap-unused']) {
        const run = await expire(id);
        expect(run).toMatchObject({
          reply: 'expired',
          changed: sorted(ctx.keys.approval(id), due, ctx.keys.audit()),
        });
        expect(await ctx.redis.hget(ctx.keys.approval(id), 'status')).toBe('expired');
      }
      expect(await auditEvents(ctx)).toEqual([expired, expired]);

      // An approved enrolment does not lapse (its record carries its own expiry); a used step-up is final.
      expect(await expire('ap-enrolment')).toMatchObject({ reply: 'approved', changed: [due] });
      expect(await expire('ap-used')).toMatchObject({ reply: 'used', changed: [due] });
      expect(await ctx.redis.hget(ctx.keys.approval('ap-enrolment'), 'status')).toBe('approved');
      expect(await ctx.redis.zrange(due, 0, -1)).toEqual(['ap-approved-later', 'ap-future']);
      expect(await auditEvents(ctx)).toHaveLength(2);
    },
  },

  {
    script: 'holdLock',
    name: 'extends a lock only for the token that holds it, and never makes one',
    async run(ctx) {
      const lock = ctx.keys.awsDenyLock(ROLE.policy, ROLE.arn);
      await ctx.redis.set(lock, 'mine', 'PX', 1_000);
      const expiry = await ctx.redis.pexpiretime(lock);

      expect(await checkedRun(ctx, 'holdLock', [lock], ['other', 60_000])).toMatchObject({
        reply: 0,
        changed: [],
      });
      expect(await ctx.redis.pexpiretime(lock)).toBe(expiry);

      expect(await checkedRun(ctx, 'holdLock', [lock], ['mine', 60_000])).toMatchObject({
        reply: 1,
        changed: [lock],
      });
      expect(await ctx.redis.pttl(lock)).toBeGreaterThan(1_000);
      expect(await ctx.redis.get(lock)).toBe('mine');

      await ctx.redis.del(lock);
      expect(await checkedRun(ctx, 'holdLock', [lock], ['mine', 60_000])).toMatchObject({
        reply: 0,
        changed: [],
      });
      expect(await ctx.redis.exists(lock)).toBe(0);
    },
  },

  {
    script: 'markIrrevocable',
    name: 'records a failed revocation: became once, then still; a settled or missing lease is left alone',
    async run(ctx) {
      const keyList = (id: string) => [
        ctx.keys.lease(id),
        ctx.keys.due(),
        ctx.keys.irrevocable(),
        ctx.keys.audit(),
      ];
      const irrevocable = (id: string, error: string) => event('lease.irrevocable', { lease: id, error });
      const mark = (id: string, nowMs: number, error: string) =>
        checkedRun(ctx, 'markIrrevocable', keyList(id), [
          id,
          nowMs,
          nowMs + 5 * MINUTE,
          error,
          irrevocable(id, error),
        ]);
      const key = await seedLease(ctx, lease('l-1', { state: 'revoking', attempts: 2 }));
      await ctx.redis.zadd(ctx.keys.due(), T0, 'l-1');

      const became = await mark('l-1', T0, 'AccessDenied');
      expect(became).toMatchObject({ reply: 'became', changed: sorted(...keyList('l-1')) });
      expect(await ctx.redis.hmget(key, 'state', 'lastError', 'attempts')).toEqual([
        'irrevocable',
        'AccessDenied',
        '3',
      ]);
      expect(await auditEvents(ctx)).toEqual([irrevocable('l-1', 'AccessDenied')]);
      expect(await ctx.redis.zscore(ctx.keys.due(), 'l-1')).toBe(String(T0 + 5 * MINUTE));
      expect(await ctx.redis.zscore(ctx.keys.irrevocable(), 'l-1')).toBe(String(T0));

      // Each failed last attempt (a sweeper retry) is one more attempt and one more event.
      const still = await mark('l-1', T0 + HOUR, 'Throttled');
      expect(still.reply).toBe('still');
      expect(await ctx.redis.hmget(key, 'lastError', 'attempts')).toEqual(['Throttled', '4']);
      expect(await auditEvents(ctx)).toEqual([
        irrevocable('l-1', 'AccessDenied'),
        irrevocable('l-1', 'Throttled'),
      ]);
      expect(await ctx.redis.zscore(ctx.keys.due(), 'l-1')).toBe(String(T0 + HOUR + 5 * MINUTE));
      // Still scored by when it first became irrevocable.
      expect(await ctx.redis.zscore(ctx.keys.irrevocable(), 'l-1')).toBe(String(T0));

      await seedLease(ctx, lease('l-active'));
      expect((await mark('l-active', T0, 'boom')).reply).toBe('became');

      for (const state of ['revoked', 'expired', 'force-closed']) {
        await seedLease(ctx, lease(`l-${state}`, { state }));
        expect(await mark(`l-${state}`, T0, 'late')).toMatchObject({ reply: 'settled', changed: [] });
        expect(await ctx.redis.hget(ctx.keys.lease(`l-${state}`), 'state')).toBe(state);
      }
      expect(await mark('l-missing', T0, 'late')).toMatchObject({ reply: 'settled', changed: [] });
      expect(await ctx.redis.zrange(ctx.keys.irrevocable(), 0, -1)).toEqual(['l-1', 'l-active']);
      // Settled or missing: no event either.
      expect(await auditEvents(ctx)).toHaveLength(3);
    },
  },

  {
    script: 'markRetry',
    name: 'makes an irrevocable lease due now, leaving it irrevocable with its error; anything else is refused',
    async run(ctx) {
      const keyList = (id: string) => [ctx.keys.lease(id), ctx.keys.due(), ctx.keys.audit()];
      const retryRequested = (id: string) => event('lease.retry_requested', { lease: id });
      const retry = (id: string) => checkedRun(ctx, 'markRetry', keyList(id), [id, T0, retryRequested(id)]);
      const key = await seedLease(ctx, lease('l-1', { state: 'irrevocable', lastError: 'AccessDenied' }));
      await ctx.redis.zadd(ctx.keys.due(), T0 + HOUR, 'l-1');
      await ctx.redis.zadd(ctx.keys.irrevocable(), T0 - HOUR, 'l-1');
      const before = await ctx.redis.hgetall(key);

      const retrying = await retry('l-1');
      expect(retrying).toMatchObject({
        reply: 'retrying',
        changed: sorted(ctx.keys.due(), ctx.keys.audit()),
      });
      expect(await ctx.redis.zscore(ctx.keys.due(), 'l-1')).toBe(String(T0));
      expect(await ctx.redis.hgetall(key)).toEqual(before);
      expect(await ctx.redis.zscore(ctx.keys.irrevocable(), 'l-1')).toBe(String(T0 - HOUR));
      expect(await auditEvents(ctx)).toEqual([retryRequested('l-1')]);

      expect(await retry('l-missing')).toMatchObject({ reply: 'missing', changed: [] });
      for (const state of ['active', 'revoking', 'revoked']) {
        await seedLease(ctx, lease(`l-${state}`, { state }));
        expect(await retry(`l-${state}`)).toMatchObject({ reply: state, changed: [] });
      }
      expect(await auditEvents(ctx)).toEqual([retryRequested('l-1')]);
    },
  },

  {
    script: 'markRevoking',
    name: 'starts revoking an active or irrevocable lease, due now; refuses the rest with their state',
    async run(ctx) {
      const keyList = (id: string) => [ctx.keys.lease(id), ctx.keys.due(), ctx.keys.audit()];
      const revoke = (id: string, force = false) =>
        checkedRun(ctx, 'markRevoking', keyList(id), [
          id,
          T0,
          'task completed',
          force ? '1' : '0',
          revokeRequested(id),
        ]);
      const active = await seedLease(ctx, lease('l-active'));
      await ctx.redis.zadd(ctx.keys.due(), T0 + 10 * MINUTE, 'l-active');

      const started = await revoke('l-active');
      expect(started).toMatchObject({ reply: 'started', changed: sorted(...keyList('l-active')) });
      expect(await ctx.redis.hmget(active, 'state', 'revokeReason', 'forced')).toEqual([
        'revoking',
        'task completed',
        null,
      ]);
      expect(await ctx.redis.zscore(ctx.keys.due(), 'l-active')).toBe(String(T0));
      expect(await auditEvents(ctx)).toEqual([revokeRequested('l-active')]);
      // Already revoking (a request repeated, a replay): the state is the answer, and no second event.
      expect(await revoke('l-active')).toMatchObject({ reply: 'revoking', changed: [] });

      await seedLease(ctx, lease('l-irrevocable', { state: 'irrevocable' }));
      expect((await revoke('l-irrevocable')).reply).toBe('started');
      expect(await ctx.redis.hget(ctx.keys.lease('l-irrevocable'), 'state')).toBe('revoking');

      expect(await revoke('l-missing')).toMatchObject({ reply: 'missing', changed: [] });
      expect(await ctx.redis.exists(ctx.keys.lease('l-missing'))).toBe(0);
      for (const state of ['revoked', 'expired', 'force-closed']) {
        await seedLease(ctx, lease(`l-${state}`, { state }));
        expect(await revoke(`l-${state}`)).toMatchObject({ reply: state, changed: [] });
        expect(await revoke(`l-${state}`, true)).toMatchObject({ reply: state, changed: [] });
      }
      expect(await auditEvents(ctx)).toEqual([revokeRequested('l-active'), revokeRequested('l-irrevocable')]);
    },
  },

  {
    script: 'markRevoking',
    name: 'with force, marks the lease forced: started from active or irrevocable, forced when already revoking',
    async run(ctx) {
      const keyList = (id: string) => [ctx.keys.lease(id), ctx.keys.due(), ctx.keys.audit()];
      const force = (id: string) =>
        checkedRun(ctx, 'markRevoking', keyList(id), [id, T0, 'admin', '1', revokeRequested(id)]);
      await seedLease(ctx, lease('l-active'));
      await seedLease(ctx, lease('l-irrevocable', { state: 'irrevocable' }));
      await seedLease(ctx, lease('l-revoking', { state: 'revoking', revokeReason: 'expiry' }));
      await ctx.redis.zadd(ctx.keys.due(), T0 - MINUTE, 'l-revoking');

      for (const id of ['l-active', 'l-irrevocable']) {
        expect(await force(id)).toMatchObject({ reply: 'started', changed: sorted(...keyList(id)) });
        expect(await ctx.redis.hmget(ctx.keys.lease(id), 'state', 'forced')).toEqual(['revoking', '1']);
      }
      // Already revoking: marked forced (audited as this request), its reason and due time kept.
      const forced = await force('l-revoking');
      expect(forced).toMatchObject({
        reply: 'forced',
        changed: sorted(ctx.keys.lease('l-revoking'), ctx.keys.audit()),
      });
      expect(await ctx.redis.hmget(ctx.keys.lease('l-revoking'), 'state', 'forced', 'revokeReason')).toEqual([
        'revoking',
        '1',
        'expiry',
      ]);
      expect(await ctx.redis.zscore(ctx.keys.due(), 'l-revoking')).toBe(String(T0 - MINUTE));
      // Forcing again (a repeated request, a replay) changes nothing and appends nothing: it answers the state.
      expect(await force('l-revoking')).toMatchObject({ reply: 'revoking', changed: [] });
      expect(await auditEvents(ctx)).toEqual(
        ['l-active', 'l-irrevocable', 'l-revoking'].map(revokeRequested),
      );
    },
  },

  {
    script: 'proposeRecord',
    name: 'writes an enrolment with its approval, index entries, expiries and audit event; then exists',
    async run(ctx) {
      const enrolment = {
        id: 'en-1',
        issuer: 'agents',
        subjectPattern: 'ci-*',
        owner: 'platform',
        purpose: 'CI deploys',
        expiresAtMs: T0 + 90 * DAY,
        approvalId: 'ap-1',
        createdBy: 'corp/admin@example.com',
        createdAtMs: T0,
      };
      const request = approval('ap-1', {
        kind: 'enrolment',
        target: 'en-1',
        taskId: undefined,
        grant: undefined,
        ttlSeconds: undefined,
        expiresAtMs: T0 + 7 * DAY,
      });
      const keyList = [
        ctx.keys.enrolment('en-1'),
        ctx.keys.approval('ap-1'),
        ctx.keys.approvals(),
        ctx.keys.approvalsDue(),
        ctx.keys.audit(),
        ctx.keys.enrolments(),
      ];
      const fields = hashFields(enrolment);
      const keyExpireAtMs = enrolment.expiresAtMs + 30 * DAY;
      const requested = event('approval.requested', { approvalId: 'ap-1' });
      const args = [
        keyExpireAtMs,
        T0,
        request.expiresAtMs,
        'ap-1',
        'en-1',
        requested,
        enrolment.expiresAtMs,
        fields.length,
        ...fields,
        ...approvalFields(request),
      ];

      const proposed = await checkedRun(ctx, 'proposeRecord', keyList, args);
      expect(proposed).toMatchObject({ reply: 'ok', changed: sorted(...keyList) });
      expect(await ctx.redis.hgetall(ctx.keys.enrolment('en-1'))).toEqual(record(fields));
      expect(await ctx.redis.hgetall(ctx.keys.approval('ap-1'))).toEqual(record(approvalFields(request)));
      expect(await ctx.redis.pexpiretime(ctx.keys.enrolment('en-1'))).toBe(keyExpireAtMs);
      expect(await ctx.redis.pexpiretime(ctx.keys.approval('ap-1'))).toBe(keyExpireAtMs);
      expect(await ctx.redis.zscore(ctx.keys.approvals(), 'ap-1')).toBe(String(T0));
      expect(await ctx.redis.zscore(ctx.keys.approvalsDue(), 'ap-1')).toBe(String(request.expiresAtMs));
      expect(await ctx.redis.zscore(ctx.keys.enrolments(), 'en-1')).toBe(String(enrolment.expiresAtMs));
      expect(await auditEvents(ctx)).toEqual([requested]);

      expect(await checkedRun(ctx, 'proposeRecord', keyList, args)).toMatchObject({
        reply: 'exists',
        changed: [],
      });
    },
  },

  {
    script: 'proposeRecord',
    name: 'an entitlement also enters its grant index; an existing approval id is refused too',
    async run(ctx) {
      const entitlement = {
        id: 'et-1',
        enrolmentId: 'en-1',
        issuer: 'agents',
        subjectPattern: 'ci-*',
        grant: 'deploy',
        owner: 'platform',
        purpose: 'deploys',
        expiresAtMs: T0 + 30 * DAY,
        approvalId: 'ap-1',
        createdBy: 'corp/admin@example.com',
        createdAtMs: T0,
      };
      const request = approval('ap-1', {
        kind: 'entitlement',
        target: 'et-1',
        taskId: undefined,
        ttlSeconds: undefined,
      });
      const keysFor = (recordId: string, approvalId: string) => [
        ctx.keys.entitlement(recordId),
        ctx.keys.approval(approvalId),
        ctx.keys.approvals(),
        ctx.keys.approvalsDue(),
        ctx.keys.audit(),
        ctx.keys.entitlements(),
        ctx.keys.grantEntitlements('deploy'),
      ];
      const argsFor = (recordId: string, approvalId: string) => {
        const fields = hashFields({ ...entitlement, id: recordId, approvalId });
        const approvalHash = approvalFields({ ...request, id: approvalId, target: recordId });
        return [
          T0 + 60 * DAY,
          T0,
          request.expiresAtMs,
          approvalId,
          recordId,
          event('approval.requested'),
          entitlement.expiresAtMs,
          fields.length,
          ...fields,
          ...approvalHash,
        ];
      };

      const proposed = await checkedRun(
        ctx,
        'proposeRecord',
        keysFor('et-1', 'ap-1'),
        argsFor('et-1', 'ap-1'),
      );
      expect(proposed).toMatchObject({ reply: 'ok', changed: sorted(...keysFor('et-1', 'ap-1')) });
      expect(await ctx.redis.zscore(ctx.keys.entitlements(), 'et-1')).toBe(String(entitlement.expiresAtMs));
      expect(await ctx.redis.zscore(ctx.keys.grantEntitlements('deploy'), 'et-1')).toBe(
        String(entitlement.expiresAtMs),
      );
      expect(await ctx.redis.hget(ctx.keys.entitlement('et-1'), 'grant')).toBe('deploy');

      // A new record whose approval id is taken: nothing written.
      const clash = await checkedRun(ctx, 'proposeRecord', keysFor('et-2', 'ap-1'), argsFor('et-2', 'ap-1'));
      expect(clash).toMatchObject({ reply: 'exists', changed: [] });
      expect(await ctx.redis.exists(ctx.keys.entitlement('et-2'))).toBe(0);
      expect(await ctx.redis.hget(ctx.keys.approval('ap-1'), 'target')).toBe('et-1');
    },
  },

  {
    script: 'purgeSettledLease',
    name: 'a lease created, settled and purged leaves no trace in any index; other leases keep theirs',
    async run(ctx) {
      await seedTask(ctx, 'task-1');
      const gone = lease('l-1');
      const kept = lease('l-2');
      for (const value of [gone, kept])
        expect(
          (await checkedRun(ctx, 'createLease', createKeys(ctx.keys, value), createArgs(value))).reply,
        ).toBe('ok');
      const settled = await checkedRun(ctx, 'settleLease', settleKeys(ctx.keys, gone), [
        'l-1',
        'expired',
        'jwt-expired',
        T0 + MINUTE,
        'expired',
        '',
        event('lease.settled', { lease: 'l-1' }),
      ]);
      expect(settled.reply).toBe('settled');

      const purged = await checkedRun(ctx, 'purgeSettledLease', purgeKeys(ctx.keys, gone), [
        'l-1',
        T0 + MINUTE,
      ]);
      expect(purged.reply).toBe(1);
      expect(purged.changed).toEqual(sorted(...purgeKeys(ctx.keys, gone)));
      expect(await ctx.redis.exists(ctx.keys.lease('l-1'))).toBe(0);

      // No set or sorted set under the prefix still names l-1; l-2 is in every index it was in.
      const remaining: Record<string, string[]> = {};
      for (const key of await keysUnder(ctx.redis, ctx.prefix)) {
        const type = await ctx.redis.type(key);
        if (type === 'set') remaining[key] = (await ctx.redis.smembers(key)).sort();
        if (type === 'zset') remaining[key] = await ctx.redis.zrange(key, 0, -1);
      }
      const ids = identityKey('agents', 'ci-bot');
      expect(remaining).toEqual({
        [ctx.keys.taskLeases('task-1')]: ['l-2'],
        [ctx.keys.identityLeases(ids)]: ['l-2'],
        [ctx.keys.grantLeases('artifacts-read')]: ['l-2'],
        [ctx.keys.identityUnsettled(ids)]: ['l-2'],
        [ctx.keys.due()]: ['l-2'],
      });
      expect(await ctx.redis.hget(ctx.keys.task('task-1'), 'activeLeases')).toBe('1');

      const again = await checkedRun(ctx, 'purgeSettledLease', purgeKeys(ctx.keys, gone), ['l-1', T0 + HOUR]);
      expect(again).toMatchObject({ reply: 0, changed: [] });
    },
  },

  {
    script: 'purgeSettledLease',
    name: 'leaves alone a lease settled after the cut-off, not settled, or restored meanwhile (dropping its entry)',
    async run(ctx) {
      const settledIndex = ctx.keys.settled();
      const purge = (value: LeaseRecord, cutoffMs: number) =>
        checkedRun(ctx, 'purgeSettledLease', purgeKeys(ctx.keys, value), [value.id, cutoffMs]);
      const indexed = async (value: LeaseRecord) => {
        await ctx.redis.sadd(ctx.keys.taskLeases(value.taskId), value.id);
        await ctx.redis.sadd(ctx.keys.identityLeases(identityKey(value.issuer, value.subject)), value.id);
        await ctx.redis.sadd(ctx.keys.grantLeases(value.grant), value.id);
      };

      const recent = lease('l-recent', { state: 'revoked' });
      await seedLease(ctx, recent);
      await indexed(recent);
      await ctx.redis.zadd(settledIndex, T0, 'l-recent');
      expect(await purge(recent, T0 - 1)).toMatchObject({ reply: 0, changed: [] });
      // At the cut-off exactly it goes.
      expect(await purge(recent, T0)).toMatchObject({ reply: 1 });

      const unsettled = lease('l-active');
      await seedLease(ctx, unsettled);
      await indexed(unsettled);
      expect(await purge(unsettled, T0 + HOUR)).toMatchObject({ reply: 0, changed: [] });

      // Restored after a failover (active again) while still in the settled index: kept, out of the index.
      const restored = lease('l-restored');
      await seedLease(ctx, restored);
      await indexed(restored);
      await ctx.redis.zadd(settledIndex, T0 - DAY, 'l-restored');
      expect(await purge(restored, T0)).toMatchObject({ reply: 0, changed: [settledIndex] });
      expect(await ctx.redis.hget(ctx.keys.lease('l-restored'), 'state')).toBe('active');
      expect(await ctx.redis.zscore(settledIndex, 'l-restored')).toBeNull();

      // Its record already gone: the index entries still go.
      const orphan = lease('l-orphan', { grant: 'db-read' });
      await indexed(orphan);
      await ctx.redis.zadd(settledIndex, T0 - DAY, 'l-orphan');
      expect(await purge(orphan, T0)).toMatchObject({ reply: 1 });
      expect(await ctx.redis.exists(ctx.keys.grantLeases('db-read'))).toBe(0);
      expect(await members(ctx, ctx.keys.taskLeases('task-1'))).toEqual(['l-active', 'l-restored']);
    },
  },

  {
    script: 'queueSession',
    name: 'queues a session once with the next seq, or answers covered when a trusted cut-off covers it',
    async run(ctx) {
      const state = ctx.keys.awsDenyState(ROLE.policy, ROLE.arn);
      const queue = (session: string, issuedAtMs: number) =>
        checkedRun(ctx, 'queueSession', [state], [`s:${session}`, T0 + HOUR, issuedAtMs, STATE_TTL_MS]);

      const first = await queue('a', T0 - MINUTE);
      expect(first).toMatchObject({ reply: ['queued', '1'], changed: [state] });
      expect(await ctx.redis.hgetall(state)).toEqual({ seq: '1', 's:a': `1|${T0 + HOUR}|${T0 - MINUTE}` });
      expect(await ctx.redis.pttl(state)).toBeGreaterThan(STATE_TTL_MS - HOUR);
      // Queued again (a retry): the same seq, nothing new.
      expect((await queue('a', T0 - MINUTE)).reply).toEqual(['queued', '1']);
      expect((await queue('b', T0 - MINUTE)).reply).toEqual(['queued', '2']);
      expect(await ctx.redis.hget(state, 'seq')).toBe('2');

      // IAM holds a cut-off after the session was issued: covered, nothing queued.
      await ctx.redis.hset(state, 'cutoffMs', T0);
      expect(await queue('c', T0 - MINUTE)).toMatchObject({ reply: ['covered', String(T0)], changed: [] });
      expect(await ctx.redis.hexists(state, 's:c')).toBe(0);
      // Issued after the cut-off, or when it is unknown when it was issued (0): queued.
      expect((await queue('d', T0 + 1)).reply).toEqual(['queued', '3']);
      expect((await queue('e', 0)).reply).toEqual(['queued', '4']);
      // A write that lost its lock may have landed over the cut-off: it is not trusted until a clean write.
      await ctx.redis.hset(state, 'lost', 1, 'cleanAt', 0);
      expect((await queue('f', T0 - MINUTE)).reply).toEqual(['queued', '5']);
      await ctx.redis.hset(state, 'cleanAt', 1);
      expect((await queue('g', T0 - MINUTE)).reply).toEqual(['covered', String(T0)]);
    },
  },

  {
    script: 'recertifyEntitlement',
    name: 'moves an active entitlement’s expiry with its indexes, key expiries and audit event; refuses the rest',
    async run(ctx) {
      const seedEntitlement = async (id: string, overrides: Record<string, string | number> = {}) => {
        const key = ctx.keys.entitlement(id);
        await ctx.redis.hset(key, {
          id,
          grant: 'deploy',
          approvalId: `ap-${id}`,
          expiresAtMs: T0 + DAY,
          ...overrides,
        });
        await ctx.redis.pexpireat(key, T0 + 2 * DAY);
        await seedApproval(
          ctx,
          approval(`ap-${id}`, { kind: 'entitlement', status: 'approved', target: id }),
          false,
        );
        await ctx.redis.zadd(ctx.keys.entitlements(), T0 + DAY, id);
        await ctx.redis.zadd(ctx.keys.grantEntitlements('deploy'), T0 + DAY, id);
      };
      const keyList = (id: string) => [
        ctx.keys.entitlement(id),
        ctx.keys.entitlements(),
        ctx.keys.grantEntitlements('deploy'),
        ctx.keys.approval(`ap-${id}`),
        ctx.keys.audit(),
      ];
      const recertified = event('entitlement.recertified');
      const recertify = (id: string) =>
        checkedRun(ctx, 'recertifyEntitlement', keyList(id), [
          T0,
          T0 + 90 * DAY,
          'corp/approver@example.com',
          'still needed',
          T0 + 120 * DAY,
          recertified,
          id,
        ]);

      await seedEntitlement('et-1');
      const ok = await recertify('et-1');
      expect(ok).toMatchObject({ reply: 'ok', changed: sorted(...keyList('et-1')) });
      expect(await ctx.redis.hgetall(ctx.keys.entitlement('et-1'))).toMatchObject({
        expiresAtMs: String(T0 + 90 * DAY),
        recertifiedAtMs: String(T0),
        recertifiedBy: 'corp/approver@example.com',
        recertifyReason: 'still needed',
      });
      expect(await ctx.redis.zscore(ctx.keys.entitlements(), 'et-1')).toBe(String(T0 + 90 * DAY));
      expect(await ctx.redis.zscore(ctx.keys.grantEntitlements('deploy'), 'et-1')).toBe(
        String(T0 + 90 * DAY),
      );
      expect(await ctx.redis.pexpiretime(ctx.keys.entitlement('et-1'))).toBe(T0 + 120 * DAY);
      expect(await ctx.redis.pexpiretime(ctx.keys.approval('ap-et-1'))).toBe(T0 + 120 * DAY);
      expect(await auditEvents(ctx)).toEqual([recertified]);

      await seedEntitlement('et-revoked', { revokedAtMs: T0 - MINUTE });
      expect(await recertify('et-revoked')).toMatchObject({ reply: 'revoked', changed: [] });
      // Expired at its expiry exactly.
      await seedEntitlement('et-expired', { expiresAtMs: T0 });
      expect(await recertify('et-expired')).toMatchObject({ reply: 'expired', changed: [] });
      expect(await recertify('et-missing')).toMatchObject({ reply: 'missing', changed: [] });
      expect(await ctx.redis.exists(ctx.keys.entitlement('et-missing'))).toBe(0);
      expect(await auditEvents(ctx)).toHaveLength(1);
    },
  },

  {
    script: 'claimDue',
    name: 'takes the leases due by now, at most the limit, and makes each due again later; the rest untouched',
    async run(ctx) {
      const due = ctx.keys.due();
      await ctx.redis.zadd(due, 100, 'early', 200, 'on-time', 300, 'second-page', 5000, 'later');

      const first = await checkedRun(ctx, 'claimDue', [due], [300, 10_300, 2]);
      expect(first).toMatchObject({ reply: ['early', 'on-time'], changed: [due] });
      expect(await ctx.redis.zrange(due, 0, -1, 'WITHSCORES')).toEqual([
        'second-page',
        '300',
        'later',
        '5000',
        'early',
        '10300',
        'on-time',
        '10300',
      ]);
      // The next claim takes the rest of what is due; a claimed lease is not due again before its time.
      expect(await checkedRun(ctx, 'claimDue', [due], [300, 10_300, 2])).toMatchObject({
        reply: ['second-page'],
      });
      expect(await checkedRun(ctx, 'claimDue', [due], [400, 10_400, 10])).toMatchObject({
        reply: [],
        changed: [],
      });
      // Come due again (its job lost): claimed again, with what fell due meanwhile, soonest first.
      expect(await checkedRun(ctx, 'claimDue', [due], [10_300, 20_300, 10])).toMatchObject({
        reply: ['later', 'early', 'on-time', 'second-page'],
      });
      expect(await ctx.redis.zscore(due, 'later')).toBe('20300');
    },
  },

  {
    script: 'releaseLock',
    name: 'releases a lock only for the token that holds it',
    async run(ctx) {
      const lock = ctx.keys.auditSealLock();
      await ctx.redis.set(lock, 'mine', 'PX', 30_000);

      expect(await checkedRun(ctx, 'releaseLock', [lock], ['lapsed-holder'])).toMatchObject({
        reply: 0,
        changed: [],
      });
      expect(await ctx.redis.get(lock)).toBe('mine');
      expect(await checkedRun(ctx, 'releaseLock', [lock], ['mine'])).toMatchObject({
        reply: 1,
        changed: [lock],
      });
      expect(await ctx.redis.exists(lock)).toBe(0);
      expect(await checkedRun(ctx, 'releaseLock', [lock], ['mine'])).toMatchObject({ reply: 0, changed: [] });
    },
  },

  {
    script: 'restoreLease',
    name: 'writes a missing lease back with its indexes and event when its task is open; idempotent after',
    async run(ctx) {
      const task = await seedTask(ctx, 'task-1', { activeLeases: 0 });
      const value = lease('l-1');
      const keyList = createKeys(ctx.keys, value);
      const [leaseKey, , taskLeases, identityLeases, grantLeases, due, audit, unsettled] =
        keyList as string[];
      // What createLease sent: caps are not checked again (this one would refuse every lease).
      const args = createArgs(value, { cap: 0, taskCap: 1, identityCap: 1 });
      await ctx.redis.hset(task, 'activeLeases', 5);

      const restored = await checkedRun(ctx, 'restoreLease', keyList, args);
      expect(restored.reply).toBe('restored');
      expect(restored.changed).toEqual(
        sorted(leaseKey!, task, taskLeases!, identityLeases!, grantLeases!, due!, audit!, unsettled!),
      );
      expect(await ctx.redis.hgetall(leaseKey!)).toEqual(record(hashFields(value)));
      for (const index of [taskLeases!, identityLeases!, grantLeases!, unsettled!])
        expect(await members(ctx, index)).toEqual(['l-1']);
      expect(await ctx.redis.zscore(due!, 'l-1')).toBe(String(value.expiresAtMs));
      expect(await ctx.redis.hget(task, 'activeLeases')).toBe('6');
      expect(await auditEvents(ctx)).toEqual([issued(value)]);

      // Replayed again (or the new primary had it): nothing changes.
      expect(await checkedRun(ctx, 'restoreLease', keyList, args)).toMatchObject({
        reply: 'exists',
        changed: [],
      });
      // A lease that is there in any state is left alone.
      await ctx.redis.hset(leaseKey!, 'state', 'revoked');
      expect(await checkedRun(ctx, 'restoreLease', keyList, args)).toMatchObject({
        reply: 'exists',
        changed: [],
      });
      expect(await ctx.redis.hget(leaseKey!, 'state')).toBe('revoked');
    },
  },

  {
    script: 'restoreLease',
    name: 'uses up again a step-up approval the failover took back, so it cannot buy a second lease',
    async run(ctx) {
      await seedTask(ctx, 'task-1', { activeLeases: 0 });
      // The new primary has the approval as approved: the lease and its use went with the old primary.
      const approvalKey = await seedApproval(ctx, approval('ap-ok', { status: 'approved' }));
      const value = lease('l-1');
      const keyList = createKeys(ctx.keys, value, 'ap-ok');
      const restored = await checkedRun(
        ctx,
        'restoreLease',
        keyList,
        createArgs(value, { approvalId: 'ap-ok' }),
      );
      expect(restored.reply).toBe('restored');
      expect(restored.changed).toContain(approvalKey);
      expect(await ctx.redis.hmget(approvalKey, 'status', 'leaseId')).toEqual(['used', 'l-1']);
      expect(await ctx.redis.zscore(ctx.keys.approvalsDue(), 'ap-ok')).toBeNull();
      // The set of the task's leases expires with the task, as createLease leaves it.
      expect(await ctx.redis.pttl(ctx.keys.taskLeases('task-1'))).toBeGreaterThan(0);
      // A second lease with the same approval is refused.
      const second = lease('l-2');
      expect(
        (
          await checkedRun(
            ctx,
            'createLease',
            createKeys(ctx.keys, second, 'ap-ok'),
            createArgs(second, { approvalId: 'ap-ok' }),
          )
        ).reply,
      ).toBe('approval_used');
    },
  },

  {
    script: 'restoreLease',
    name: 'a lease whose task is no longer open (closed, past expiry, or gone) comes back revoking and due now',
    async run(ctx) {
      const restore = (value: LeaseRecord, nowMs = T0 + MINUTE) =>
        checkedRun(ctx, 'restoreLease', createKeys(ctx.keys, value), createArgs(value, { nowMs }));
      const expectRevokingNow = async (value: LeaseRecord, nowMs = T0 + MINUTE) => {
        expect(
          await ctx.redis.hmget(ctx.keys.lease(value.id), 'state', 'revokeReason', 'credentialSha256'),
        ).toEqual(['revoking', 'restored after a failover: its task is not open', 'c0ffee']);
        expect(await ctx.redis.zscore(ctx.keys.due(), value.id)).toBe(String(nowMs));
      };

      const closedTask = await seedTask(ctx, 'task-closed', { state: 'completed', activeLeases: 0 });
      const closed = lease('l-closed', { taskId: 'task-closed' });
      expect((await restore(closed)).reply).toBe('restored_revoking');
      await expectRevokingNow(closed);
      // Still counted on its task until it settles.
      expect(await ctx.redis.hget(closedTask, 'activeLeases')).toBe('1');

      await seedTask(ctx, 'task-1');
      const late = lease('l-late');
      expect((await restore(late, T0 + HOUR)).reply).toBe('restored_revoking');
      await expectRevokingNow(late, T0 + HOUR);

      const orphan = lease('l-orphan', { taskId: 'task-gone' });
      const run = await restore(orphan);
      expect(run.reply).toBe('restored_revoking');
      await expectRevokingNow(orphan);
      expect(run.changed).not.toContain(ctx.keys.task('task-gone'));
      expect(await ctx.redis.exists(ctx.keys.task('task-gone'))).toBe(0);
      expect(await members(ctx, ctx.keys.taskLeases('task-gone'))).toEqual(['l-orphan']);
      expect(await auditEvents(ctx)).toEqual([issued(closed), issued(late), issued(orphan)]);
    },
  },

  {
    script: 'revokeRecord',
    name: 'revokes an enrolment or entitlement once, with its audit event',
    async run(ctx) {
      const enrolment = ctx.keys.enrolment('en-1');
      await ctx.redis.hset(enrolment, {
        id: 'en-1',
        issuer: 'agents',
        subjectPattern: 'ci-*',
        expiresAtMs: T0 + DAY,
      });
      const revoked = event('enrolment.revoked');
      const revoke = (key: string, atMs: number) =>
        checkedRun(
          ctx,
          'revokeRecord',
          [key, ctx.keys.audit()],
          [atMs, 'corp/oncall@example.com', 'leaked', revoked],
        );

      const ok = await revoke(enrolment, T0);
      expect(ok).toMatchObject({ reply: 'ok', changed: sorted(enrolment, ctx.keys.audit()) });
      expect(await ctx.redis.hgetall(enrolment)).toMatchObject({
        revokedAtMs: String(T0),
        revokedBy: 'corp/oncall@example.com',
        revokeReason: 'leaked',
      });
      expect(await auditEvents(ctx)).toEqual([revoked]);

      expect(await revoke(enrolment, T0 + MINUTE)).toMatchObject({ reply: 'revoked', changed: [] });
      expect(await ctx.redis.hget(enrolment, 'revokedAtMs')).toBe(String(T0));
      const missing = ctx.keys.entitlement('et-missing');
      expect(await revoke(missing, T0)).toMatchObject({ reply: 'missing', changed: [] });
      expect(await ctx.redis.exists(missing)).toBe(0);
    },
  },

  {
    script: 'settleLease',
    name: 'settles once: state and outcome written, out of due, irrevocable and the quota, into settled',
    async run(ctx) {
      const task = await seedTask(ctx, 'task-1', { activeLeases: 2 });
      const value = lease('l-1', {
        state: 'irrevocable',
        revokeReason: 'task completed',
        lastError: 'AccessDenied',
      });
      const keyList = settleKeys(ctx.keys, value);
      const [leaseKey, due, irrevocable, , settled, unsettled] = keyList as string[];
      await seedLease(ctx, value);
      await ctx.redis.zadd(due!, T0, 'l-1', T0, 'l-2');
      await ctx.redis.zadd(irrevocable!, T0 - HOUR, 'l-1');
      await ctx.redis.sadd(unsettled!, 'l-1', 'l-2');
      const closed = event('lease.force_closed', { lease: 'l-1' });
      const settle = (nowMs: number) =>
        checkedRun(ctx, 'settleLease', keyList, [
          'l-1',
          'force-closed',
          'force-closed',
          nowMs,
          'admin force',
          'IAM refused',
          closed,
        ]);

      const done = await settle(T0 + MINUTE);
      expect(done).toMatchObject({ reply: 'settled', changed: sorted(...keyList) });
      expect(await ctx.redis.hgetall(leaseKey!)).toMatchObject({
        state: 'force-closed',
        revocation: 'force-closed',
        revokedAtMs: String(T0 + MINUTE),
        // The reason the revocation was asked for is kept.
        revokeReason: 'task completed',
        revocationDetail: 'IAM refused',
      });
      expect(await ctx.redis.zrange(due!, 0, -1)).toEqual(['l-2']);
      expect(await ctx.redis.exists(irrevocable!)).toBe(0);
      expect(await members(ctx, unsettled!)).toEqual(['l-2']);
      expect(await ctx.redis.zscore(settled!, 'l-1')).toBe(String(T0 + MINUTE));
      expect(await ctx.redis.hget(task, 'activeLeases')).toBe('1');
      expect(await auditEvents(ctx)).toEqual([closed]);

      // Settled again (a replay, a second worker): nothing moves, the task is not counted down twice, and
      // no second event.
      expect(await settle(T0 + HOUR)).toMatchObject({ reply: 'already', changed: [] });
      expect(await ctx.redis.hget(task, 'activeLeases')).toBe('1');
      expect(await auditEvents(ctx)).toEqual([closed]);
    },
  },

  {
    script: 'settleLease',
    name: 'writes the reason given when none was recorded, never a task that is gone; missing stays missing',
    async run(ctx) {
      const value = lease('l-1', { taskId: 'task-gone' });
      const keyList = settleKeys(ctx.keys, value);
      await seedLease(ctx, value);
      await ctx.redis.zadd(ctx.keys.due(), value.expiresAtMs, 'l-1');
      await ctx.redis.sadd(ctx.keys.identityUnsettled(identityKey('agents', 'ci-bot')), 'l-1');

      const done = await checkedRun(ctx, 'settleLease', keyList, [
        'l-1',
        'expired',
        'jwt-expired',
        T0,
        'expired',
        '',
        event('lease.settled', { lease: 'l-1' }),
      ]);
      expect(done.reply).toBe('settled');
      expect(done.changed).not.toContain(ctx.keys.task('task-gone'));
      expect(await ctx.redis.exists(ctx.keys.task('task-gone'))).toBe(0);
      const hash = await ctx.redis.hgetall(ctx.keys.lease('l-1'));
      expect(hash).toMatchObject({ state: 'expired', revocation: 'jwt-expired', revokeReason: 'expired' });
      expect(hash).not.toHaveProperty('revocationDetail');
      expect(await ctx.redis.zscore(ctx.keys.settled(), 'l-1')).toBe(String(T0));

      const missing = lease('l-missing');
      const run = await checkedRun(ctx, 'settleLease', settleKeys(ctx.keys, missing), [
        'l-missing',
        'revoked',
        'x',
        T0,
        '',
        '',
        event('lease.settled', { lease: 'l-missing' }),
      ]);
      expect(run).toMatchObject({ reply: 'missing', changed: [] });
      expect(await auditEvents(ctx)).toEqual([event('lease.settled', { lease: 'l-1' })]);
      expect(await ctx.redis.zscore(ctx.keys.settled(), 'l-missing')).toBeNull();
    },
  },
];
