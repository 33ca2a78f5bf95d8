/**
 * Real Redis topologies for integration tests: a Sentinel set (./redis-sentinel) and a Redis Cluster
 * (./redis-cluster), built from redis-server children on free loopback ports (never 6379), every process in
 * its own temp dir with its log at <dir>/redis.log. Nothing is registered globally: callers stop what they
 * start (in a finally). This file holds what both share: one node, polling, and hashSlot.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../../src/wiring/local-redis';
import { tempDir } from './fixtures';

export const HOST = '127.0.0.1';
const POLL_MS = 50;
/** How long a topology may take to form, fail over or promote. */
export const TOPOLOGY_TIMEOUT_MS = 30_000;
const run = promisify(execFile);

/**
 * What tasklease needs of every data node (see startLocalRedis), plus an AOF so restart() keeps the data;
 * a replica's full sync starts at once instead of after the default 5 s wait for more replicas to join.
 */
const DATA_NODE_ARGS = [
  ...['--repl-diskless-sync-delay', '0'],
  ...'--bind 127.0.0.1 --protected-mode no --appendonly yes --appendfsync everysec'.split(' '),
  ...'--maxmemory-policy noeviction --hash-max-listpack-value 256 --loglevel warning'.split(' '),
  ...['--save', ''],
];

export interface RedisNode {
  host: '127.0.0.1';
  port: number;
  /** `127.0.0.1:<port>` */
  address: string;
  /** Its working dir (--dir): its AOF or dump.rdb, and redis.log. */
  dir: string;
  pid: number | undefined;
  /** SIGKILL the process and wait for its exit. */
  kill(): Promise<void>;
  /** Start it again on the same port with the same dir and arguments (its AOF is reloaded); resolves once it answers PING. */
  restart(): Promise<void>;
  /** SIGTERM and wait. */
  stop(): Promise<void>;
  /** Runs redis-cli against this node, returns trimmed stdout (throws on non-zero exit). */
  cli(...args: string[]): Promise<string>;
}

/** Thrown by a probe to end a wait at once instead of polling until the deadline. */
export class GiveUp extends Error {}

/** Polls `probe` until it returns a value; a probe that throws means "not yet" (nodes may be down) unless GiveUp. */
export async function waitUntil<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) {
        if (process.env.TOPO_DEBUG) console.log(`${what}: ${timeoutMs - (deadline - Date.now())} ms`);
        return value;
      }
    } catch (error) {
      if (error instanceof GiveUp) throw error;
      lastError = error;
    }
    if (Date.now() > deadline) {
      const cause = lastError instanceof Error ? ` (last error: ${lastError.message.trim()})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${cause}`);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

export const isLive = (node: RedisNode) => node.pid !== undefined;
export const range = (count: number) => Array.from({ length: count }, (_, index) => index);

/** `INFO <section>` as a record of its `field:value` lines. */
export async function info(node: RedisNode, section: string): Promise<Record<string, string>> {
  const lines = (await node.cli('INFO', section)).split('\n');
  return Object.fromEntries(
    lines
      .filter((line) => line.includes(':'))
      .map((line) => line.trim().split(/:(.*)/, 2) as [string, string]),
  );
}

// freePort() closes its probe socket before redis-server binds: never hand the same port out twice here.
const portsHandedOut = new Set<number>();
export async function allocatePort(): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (!portsHandedOut.has(port)) {
      portsHandedOut.add(port);
      return port;
    }
  }
}

function createNode(
  port: number,
  dir: string,
  argv: string[],
  onStart?: (node: RedisNode) => Promise<void>,
): RedisNode {
  let child: ChildProcess | undefined;
  let exited = Promise.resolve();
  const running = () => child !== undefined && child.exitCode === null && child.signalCode === null;
  const signal = async (name: NodeJS.Signals, killAfterMs?: number) => {
    if (!running()) return;
    child?.kill(name);
    const timer = killAfterMs ? setTimeout(() => child?.kill('SIGKILL'), killAfterMs) : undefined;
    await exited;
    clearTimeout(timer);
  };
  const node: RedisNode = {
    host: HOST,
    port,
    address: `${HOST}:${port}`,
    dir,
    get pid() {
      return running() ? child?.pid : undefined;
    },
    kill: () => signal('SIGKILL'),
    stop: () => signal('SIGTERM', 5_000),
    async restart() {
      await node.stop();
      // No stdio pipes and unref(): a forgotten server never keeps Jest alive (it logs to <dir>/redis.log).
      const proc = spawn('redis-server', argv, { stdio: 'ignore' });
      proc.unref();
      child = proc;
      exited = new Promise((resolve) => {
        proc.once('exit', () => resolve());
        proc.once('error', () => resolve());
      });
      await waitUntil(`${node.address} to answer PING`, 10_000, async () => {
        if (!running()) throw new GiveUp(`redis-server on ${node.address} exited; see ${dir}/redis.log`);
        return (await node.cli('PING')) === 'PONG' ? true : undefined;
      });
      await onStart?.(node);
    },
    async cli(...args) {
      // -e: an error reply exits non-zero too, so it throws rather than coming back as text.
      const cliArgs = ['-e', '-h', HOST, '-p', String(port), ...args];
      try {
        return (await run('redis-cli', cliArgs, { timeout: 10_000 })).stdout.trim();
      } catch (error) {
        const { stdout, stderr } = error as { stdout?: string; stderr?: string };
        const said = `${stderr ?? ''} ${stdout ?? ''}`.trim() || String(error);
        throw new Error(`redis-cli ${args.join(' ')} on ${node.address}: ${said}`);
      }
    },
  };
  return node;
}

/**
 * A redis-server on a fresh port; retried on a new port if it dies at once (another process took the port).
 * `onStart` runs after every start, restarts included, for settings that live only in memory.
 */
export async function startNode(
  label: string,
  argsFor: (port: number, dir: string) => string[] | Promise<string[]>,
  onStart?: (node: RedisNode) => Promise<void>,
): Promise<RedisNode> {
  const dir = tempDir(label);
  for (let attempt = 1; ; attempt++) {
    const port = await allocatePort();
    const node = createNode(port, dir, await argsFor(port, dir), onStart);
    try {
      await node.restart();
      return node;
    } catch (error) {
      await node.kill();
      if (attempt === 3) throw error;
    }
  }
}

/** A data node's argv: its port and dir, then DATA_NODE_ARGS. */
export const dataNodeArgs = (port: number, dir: string) => [
  ...['--port', String(port), '--dir', dir, '--logfile', path.join(dir, 'redis.log')],
  ...DATA_NODE_ARGS,
];

/** CRC16/XMODEM (polynomial 0x1021, initial 0), the checksum Redis Cluster hashes keys with. */
function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const byte of bytes) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++)
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/** The hash slot of a key: only the part between the first `{` and the next `}` counts, when it is not empty. */
export function hashSlot(key: string): number {
  const bytes = Buffer.from(key, 'utf8'); // Redis hashes bytes; `{` and `}` are single bytes in UTF-8
  const open = bytes.indexOf(0x7b);
  const close = open === -1 ? -1 : bytes.indexOf(0x7d, open + 1);
  const hashed = close > open + 1 ? bytes.subarray(open + 1, close) : bytes;
  return crc16(hashed) % 16384;
}

// The two topologies import the node layer above from this file; their exports are re-exported lazily.
export { startSentinelSet, type SentinelSet } from './redis-sentinel';
export { startRedisCluster, type RedisCluster } from './redis-cluster';
