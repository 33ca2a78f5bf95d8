import type { RedisClient } from './connection';
import { queueScript, runScript, type ScriptName } from './scripts';

/** Fewer replicas than `replicaAcks` confirmed a write within `replicaAckTimeoutMs`. */
export class NotReplicatedError extends Error {
  override name = 'NotReplicatedError';
  constructor(
    readonly acknowledged: number,
    readonly wanted: number,
    /** What the script answered on the primary: the write happened there, unconfirmed. */
    readonly result: unknown,
  ) {
    super(`${acknowledged} of ${wanted} replicas confirmed the write in time`);
  }
}

/**
 * The writes a process re-applies after the primary changed, and how: a write kept only when it took effect,
 * replayed through a script that is idempotent on a primary that has it already. A lease comes back through
 * `restoreLease` (written if missing, whatever became of its task); a revocation request, a settlement and a
 * completion are replayed as themselves, each a no-op where it already happened. A lease's scripts append
 * their audit event only when they change the lease, so a replay never writes one twice.
 */
const REPLAYED: Partial<Record<ScriptName, { as: ScriptName; kept: (result: unknown) => boolean }>> = {
  createLease: { as: 'restoreLease', kept: (result) => result === 'ok' },
  markRevoking: { as: 'markRevoking', kept: (result) => result === 'started' || result === 'forced' },
  settleLease: { as: 'settleLease', kept: (result) => result === 'settled' },
  completeTask: { as: 'completeTask', kept: (result) => result === 'completed' },
};

interface JournalEntry {
  atMs: number;
  name: ScriptName;
  /**
   * `[keys, args]` as JSON: one string where the arrays would be some 40 small objects, for each of up to
   * `replayMaxWrites` writes held for a minute (what the garbage collector would otherwise trace over and over).
   */
  call: string;
}

export interface ReplayReport {
  replayed: number;
  /** Writes the new primary did not have (a lease written back, a revocation re-requested...). */
  reapplied: number;
}

export interface DurableWrites {
  /**
   * Runs a write script. With `replicaAcks` > 0 it goes with a `WAIT` in one round trip and throws
   * NotReplicatedError when fewer replicas confirmed it in time (the write stands on the primary). Writes
   * that took effect are kept for `replaySeconds` to re-apply after a primary change. `confirm: false`
   * skips the WAIT, for a batch of writes the caller confirms once at its end (`confirm()`).
   */
  run(
    name: ScriptName,
    keys: readonly string[],
    args: readonly (string | number)[],
    options?: { confirm?: boolean },
  ): Promise<unknown>;
  /** `WAIT` alone, for writes made another way on this connection (BullMQ's job adds): throws as `run`. */
  confirm(): Promise<void>;
  /** Re-applies the kept writes, oldest first (the primary changed). One replay at a time. */
  replay(): Promise<ReplayReport>;
  /** How many writes are kept now. */
  kept(): number;
}

export function createDurableWrites(
  redis: RedisClient,
  options: {
    /** Any key under the prefix: routes a lone WAIT, on a cluster, to the node the writes went to. */
    routingKey: string;
    replicaAcks: number;
    replicaAckTimeoutMs: number;
    replaySeconds: number;
    replayMaxWrites: number;
    nowMs: () => number;
    /** Fewer replicas than asked confirmed a write in time (a metric and a log line, in the wiring). */
    onNotReplicated: (acknowledged: number, wanted: number) => void;
  },
): DurableWrites {
  const { replicaAcks, replicaAckTimeoutMs } = options;
  // The kept writes are journal[head..], oldest first. Dropping the oldest moves `head` on: taking them off
  // the front of the array instead costs a copy of the whole journal on every write (measured: ~140 µs with
  // 60,000 kept). The array is cut down once half of it is dropped.
  let journal: (JournalEntry | undefined)[] = [];
  let head = 0;
  let replays: Promise<unknown> = Promise.resolve();

  const keep = (
    atMs: number,
    name: ScriptName,
    keys: readonly string[],
    args: readonly (string | number)[],
  ) => {
    if (options.replaySeconds === 0 || options.replayMaxWrites === 0) return;
    journal.push({ atMs, name, call: JSON.stringify([keys, args]) });
    const cutoffMs = atMs - options.replaySeconds * 1000;
    const drop = Math.max(head, journal.length - options.replayMaxWrites);
    while (head < drop || (head < journal.length && (journal[head] as JournalEntry).atMs < cutoffMs))
      journal[head++] = undefined;
    if (head >= 1024 && head * 2 >= journal.length) {
      journal = journal.slice(head);
      head = 0;
    }
  };

  /** Script and WAIT in one pipeline: WAIT covers every earlier write of this connection, this one included. */
  async function runAndWait(name: ScriptName, keys: readonly string[], args: readonly (string | number)[]) {
    const replies = (await queueScript(redis.pipeline(), name, keys, args)
      .wait(replicaAcks, replicaAckTimeoutMs)
      .exec()) as [Error | null, unknown][];
    const [scriptError, result] = replies[0] ?? [new Error('no reply'), null];
    if (scriptError) throw scriptError;
    const [waitError, acknowledged] = replies[1] ?? [new Error('no reply'), 0];
    return { result, acknowledged: waitError ? 0 : Number(acknowledged) };
  }

  const notReplicated = (acknowledged: number, result: unknown) => {
    options.onNotReplicated(acknowledged, replicaAcks);
    return new NotReplicatedError(acknowledged, replicaAcks, result);
  };

  async function run(
    name: ScriptName,
    keys: readonly string[],
    args: readonly (string | number)[],
    runOptions: { confirm?: boolean } = {},
  ) {
    const atMs = options.nowMs();
    if (replicaAcks === 0 || runOptions.confirm === false) {
      const result = await runScript(redis, name, keys, args);
      if (REPLAYED[name]?.kept(result)) keep(atMs, name, keys, args);
      return result;
    }
    const { result, acknowledged } = await runAndWait(name, keys, args);
    if (REPLAYED[name]?.kept(result)) keep(atMs, name, keys, args);
    if (acknowledged < replicaAcks) throw notReplicated(acknowledged, result);
    return result;
  }

  async function confirm(): Promise<void> {
    if (replicaAcks === 0) return;
    const replies = (await redis
      .pipeline()
      .exists(options.routingKey)
      .wait(replicaAcks, replicaAckTimeoutMs)
      .exec()) as [Error | null, unknown][];
    const acknowledged = replies[1]?.[0] ? 0 : Number(replies[1]?.[1] ?? 0);
    if (acknowledged < replicaAcks) throw notReplicated(acknowledged, null);
  }

  async function replayAll(): Promise<ReplayReport> {
    const entries = journal.slice(head) as JournalEntry[];
    let reapplied = 0;
    for (const entry of entries) {
      const replay = REPLAYED[entry.name];
      if (!replay) continue;
      const [keys, args] = JSON.parse(entry.call) as [string[], (string | number)[]];
      const result = await runScript(redis, replay.as, keys, args);
      if (typeof result === 'string' && /^(restored|started|forced|settled|completed)/.test(result))
        reapplied++;
    }
    await confirm().catch(() => undefined);
    return { replayed: entries.length, reapplied };
  }

  return {
    run,
    confirm,
    replay() {
      const next = replays.then(replayAll);
      replays = next.catch(() => undefined);
      return next;
    },
    kept: () => journal.length - head,
  };
}
