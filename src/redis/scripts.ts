import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { ChainableCommander, ClientContext, Result } from 'ioredis';
import type { RedisClient } from './redis-client';

/**
 * Every Lua script, one file each in `scripts/`, named by its key count the way BullMQ names its commands
 * (`createLease-10.lua`: 10 keys; `countStates-var.lua`: as many as the caller passes). Every key a script
 * touches comes in `KEYS` (none is built inside Lua), so each runs on a Redis Cluster too: the keys share the
 * prefix's hash tag. They are defined on each connection with ioredis `defineCommand`, which sends a script by
 * its SHA-1 (EVALSHA) and in full again after a restart or failover (NOSCRIPT).
 */
export const SCRIPT_NAMES = [
  'appendSeal',
  'claimDue',
  'commitWrite',
  'completeTask',
  'countStates',
  'createApproval',
  'createLease',
  'createTask',
  'decideApproval',
  'expireApproval',
  'holdLock',
  'markIrrevocable',
  'markRetry',
  'markRevoking',
  'proposeRecord',
  'purgeSettledLease',
  'queueSession',
  'recertifyEntitlement',
  'releaseLock',
  'restoreLease',
  'revokeRecord',
  'settleLease',
] as const;

export type ScriptName = (typeof SCRIPT_NAMES)[number];
type ScriptArg = string | number;

type ScriptCommands<Context extends ClientContext> = {
  [Name in ScriptName]: (...args: ScriptArg[]) => Result<unknown, Context>;
};

// How ioredis types commands made by defineCommand: on clients, clusters and pipelines alike.
declare module 'ioredis' {
  interface RedisCommander<
    Context extends ClientContext = { type: 'default' },
  > extends ScriptCommands<Context> {}
}

export interface ScriptFile {
  name: ScriptName;
  /** Keys the script takes, or null when the caller passes the count (`-var`). */
  keyCount: number | null;
  lua: string;
}

export const SCRIPT_DIR = path.join(__dirname, 'scripts');

/** Reads the folder once and checks it holds exactly the scripts named above, each once. */
function readScripts(dir: string): ReadonlyMap<ScriptName, ScriptFile> {
  const files = new Map<ScriptName, ScriptFile>();
  for (const file of readdirSync(dir).filter((name) => name.endsWith('.lua'))) {
    const match = /^([A-Za-z]+)-(\d+|var)\.lua$/.exec(file);
    const name = match?.[1] as ScriptName | undefined;
    if (!match || !name || !SCRIPT_NAMES.includes(name) || files.has(name))
      throw new Error(`unexpected Lua script ${path.join(dir, file)}`);
    const keyCount = match[2] === 'var' ? null : Number(match[2]);
    files.set(name, { name, keyCount, lua: readFileSync(path.join(dir, file), 'utf8') });
  }
  const missing = SCRIPT_NAMES.filter((name) => !files.has(name));
  if (missing.length > 0) throw new Error(`Lua scripts missing from ${dir}: ${missing.join(', ')}`);
  return files;
}

export const SCRIPTS = readScripts(SCRIPT_DIR);

/** Defines every script on a connection (a client or a cluster), once, when it is made. */
export function defineScripts(redis: RedisClient): void {
  for (const { name, keyCount, lua } of SCRIPTS.values())
    redis.defineCommand(name, keyCount === null ? { lua } : { lua, numberOfKeys: keyCount });
}

function commandArgs(name: ScriptName, keys: readonly string[], args: readonly ScriptArg[]): ScriptArg[] {
  const { keyCount } = SCRIPTS.get(name) as ScriptFile;
  if (keyCount === null) return [keys.length, ...keys, ...args];
  // A programming error, caught by the first test that runs the script: the file says how many keys it reads.
  if (keys.length !== keyCount) throw new Error(`${name} takes ${keyCount} keys, was given ${keys.length}`);
  return [...keys, ...args];
}

/** Runs a script on a connection. */
export const runScript = (
  redis: RedisClient,
  name: ScriptName,
  keys: readonly string[],
  args: readonly ScriptArg[],
): Promise<unknown> => redis[name](...commandArgs(name, keys, args));

/** Queues a script on a pipeline (its reply comes with the pipeline's). */
export const queueScript = (
  pipeline: ChainableCommander,
  name: ScriptName,
  keys: readonly string[],
  args: readonly ScriptArg[],
): ChainableCommander => pipeline[name](...commandArgs(name, keys, args));
