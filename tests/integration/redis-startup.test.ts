import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { ConfigInput } from '../../src/config/schema';
import { generateSigningJwks } from '../../src/signing/signing-keys';
import { startLocalRedis, type LocalRedis } from '../../src/wiring/local-redis';
import { createTestIssuer, tempDir } from '../support/fixtures';
import {
  buildIfStale,
  freePort,
  spawnTasklease,
  waitForHttp,
  type TaskleaseProcess,
} from '../support/processes';
import { startRedisCluster, type RedisCluster } from '../support/redis-topology';

/**
 * The real `tasklease serve` and `tasklease worker` processes refuse a Redis they cannot keep leases on:
 * each exits non-zero within 15 s of being started, saying why and naming the address. A running `serve`
 * turns not-ready (503) when its Redis becomes a replica, and ready again once it is a primary again.
 * Every test runs its own redis-server(s) on free loopback ports: the shared test Redis is never changed.
 */

/** What the product promises: a process that cannot start exits within this (src/cli/commands/processes.ts). */
const EXIT_LIMIT_MS = 15_000;
/** How long a test waits for the exit before calling it a hang (longer than the limit, to measure it). */
const HANG_MS = 25_000;

type Command = 'serve' | 'worker';

const cli = async (port: number, ...args: string[]) =>
  (
    await promisify(execFile)('redis-cli', ['-e', '-h', '127.0.0.1', '-p', String(port), ...args])
  ).stdout.trim();

/** A config file like startTestBroker's, but written without connecting anywhere: one issuer, no grants. */
async function writeConfig(broker?: ConfigInput['broker']): Promise<string> {
  const dir = tempDir('startup-cfg');
  mkdirSync(path.join(dir, 'policies'));
  writeFileSync(
    path.join(dir, 'policies', 'none.cedar'),
    'permit(principal, action, resource) when { false };',
  );
  const agents = await createTestIssuer({ name: 'agents' });
  const input: ConfigInput = {
    issuers: [agents.config],
    grants: {},
    policies: './policies',
    ...(broker ? { broker } : {}),
  };
  const file = path.join(dir, 'tasklease.json');
  writeFileSync(file, JSON.stringify(input));
  return file;
}

interface Refusal {
  command: Command;
  /** null: still running after HANG_MS (then killed). */
  code: number | null;
  signal: NodeJS.Signals | null;
  elapsedMs: number;
  output: string;
}

describe('Redis checks of the tasklease processes at start-up', () => {
  let configFile: string;
  let signingKeysJson: string;
  const spawned: TaskleaseProcess[] = [];
  const servers: LocalRedis[] = [];

  beforeAll(async () => {
    await buildIfStale();
    configFile = await writeConfig();
    signingKeysJson = JSON.stringify(await generateSigningJwks());
  });
  afterEach(async () => {
    await Promise.all(spawned.splice(0).map((proc) => proc.stop()));
    await Promise.all(servers.splice(0).map((server) => server.stop()));
  });

  const redisServer = async (label: string) => {
    const server = await startLocalRedis(tempDir(label), { appendOnly: false });
    servers.push(server);
    return server;
  };

  const start = async (command: Command, redisUrl: string, config = configFile) => {
    const port = String(await freePort());
    const proc = spawnTasklease([command], {
      TASKLEASE_CONFIG: config,
      TASKLEASE_SIGNING_KEYS: signingKeysJson,
      REDIS_URL: redisUrl,
      PORT: port,
      WORKER_PORT: port,
    });
    spawned.push(proc);
    return { proc, url: `http://127.0.0.1:${port}` };
  };

  /** Starts the command and waits for it to exit (at most HANG_MS), measuring from the spawn to the exit. */
  const runToExit = async (command: Command, redisUrl: string, config = configFile): Promise<Refusal> => {
    const startedAt = Date.now();
    const { proc } = await start(command, redisUrl, config);
    const { child } = proc;
    // 'close' comes after 'exit' once stdout and stderr are drained: the output is complete then.
    const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null } | null>(
      (resolve) => {
        const timer = setTimeout(() => resolve(null), HANG_MS);
        child.once('exit', (code, signal) => {
          clearTimeout(timer);
          resolve({ code, signal });
        });
      },
    );
    const elapsedMs = Date.now() - startedAt;
    if (exit) await closed;
    else await proc.stop();
    return {
      command,
      code: exit?.code ?? null,
      signal: exit?.signal ?? null,
      elapsedMs,
      output: proc.output(),
    };
  };

  /** Refused means: exited by itself, non-zero, within the limit, its output naming the reason and the address. */
  const expectRefused = (refusal: Refusal, reason: RegExp, address: string) => {
    const seen = `${refusal.command} (exit ${refusal.code}, signal ${refusal.signal}, after ${refusal.elapsedMs} ms):\n${refusal.output}`;
    expect({ exited: refusal.code !== null, seen }).toMatchObject({ exited: true });
    expect({ code: refusal.code, seen }).not.toMatchObject({ code: 0 });
    expect(refusal.elapsedMs).toBeLessThanOrEqual(EXIT_LIMIT_MS);
    expect(refusal.output).toMatch(reason);
    expect(refusal.output).toContain(address);
  };

  it('exits when Redis is unreachable (serve and worker), naming the address', async () => {
    const port = await freePort(); // nothing listens there
    const url = `redis://127.0.0.1:${port}`;
    const refusals = await Promise.all([runToExit('serve', url), runToExit('worker', url)]);
    for (const refusal of refusals) {
      expectRefused(
        refusal,
        /cannot reach Redis at redis:\/\/127\.0\.0\.1:\d+\/0 within 10 s/,
        `127.0.0.1:${port}`,
      );
      expect(refusal.output).toContain(`tasklease ${refusal.command}: could not start`);
    }
    console.info(
      `unreachable Redis: exited after ${refusals.map((r) => `${r.command} ${r.elapsedMs} ms`).join(', ')}`,
    );
  });

  it('exits when Redis may evict keys (maxmemory-policy allkeys-lru), naming noeviction', async () => {
    const redis = await redisServer('startup-evicting');
    await cli(redis.port, 'CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lru');
    const refusals = await Promise.all([runToExit('serve', redis.url), runToExit('worker', redis.url)]);
    for (const refusal of refusals)
      expectRefused(
        refusal,
        /maxmemory-policy is "allkeys-lru": Redis could evict leases\. Set "maxmemory-policy noeviction"/,
        `127.0.0.1:${redis.port}`,
      );
    console.info(
      `evicting Redis: exited after ${refusals.map((r) => `${r.command} ${r.elapsedMs} ms`).join(', ')}`,
    );
  });

  it('exits when connected to a replica, saying it is not a primary', async () => {
    const primary = await redisServer('startup-primary');
    const replica = await redisServer('startup-replica');
    await cli(replica.port, 'REPLICAOF', '127.0.0.1', String(primary.port));
    const refusals = await Promise.all([runToExit('serve', replica.url), runToExit('worker', replica.url)]);
    for (const refusal of refusals)
      expectRefused(
        refusal,
        new RegExp(`Redis 127\\.0\\.0\\.1:${replica.port} is a (slave|replica), not a primary`),
        `127.0.0.1:${replica.port}`,
      );
    console.info(`replica: exited after ${refusals.map((r) => `${r.command} ${r.elapsedMs} ms`).join(', ')}`);
  });

  describe('on a Redis Cluster, with a key prefix lacking a hash tag', () => {
    let cluster: RedisCluster | undefined;
    let refusals: Refusal[];
    beforeAll(async () => {
      cluster = await startRedisCluster({ replicasPerPrimary: 0 });
      const config = await writeConfig({ issuer: 'tasklease-test', redisPrefix: 't-x:' });
      refusals = await Promise.all([
        runToExit('serve', cluster.url, config),
        runToExit('worker', cluster.url, config),
      ]);
      console.info(
        `cluster without hash tag: exited after ${refusals.map((r) => `${r.command} ${r.elapsedMs} ms`).join(', ')}`,
      );
    }, 60_000);
    afterAll(async () => {
      await cluster?.stop();
    });

    it('exits non-zero within 15 s, saying the prefix needs a hash tag', () => {
      for (const refusal of refusals) {
        const seen = `${refusal.command} (exit ${refusal.code}, after ${refusal.elapsedMs} ms):\n${refusal.output}`;
        expect({ code: refusal.code, seen }).not.toMatchObject({ code: null });
        expect({ code: refusal.code, seen }).not.toMatchObject({ code: 0 });
        expect(refusal.elapsedMs).toBeLessThanOrEqual(EXIT_LIMIT_MS);
        expect(refusal.output).toContain('broker.redisPrefix "t-x:" has no hash tag');
        expect(refusal.output).toMatch(/must carry a tag such as "\{tl\}:"/);
      }
    });

    it('names the cluster it refused', () => {
      // Like every other start-up refusal: the address is in the message (src/wiring/shared-context.ts).
      const seed = (cluster as RedisCluster).url.replace('redis+cluster://', '').split(',')[0] as string;
      for (const refusal of refusals) expect(refusal.output).toContain(seed);
    });
  });

  it('readiness: 503 once its Redis is a replica, 200 again once it is a primary', async () => {
    const redis = await redisServer('startup-ready');
    const other = await redisServer('startup-other');
    const serve = await start('serve', redis.url);
    const worker = await start('worker', redis.url);
    await waitForHttp(`${serve.url}/readyz`, serve.proc, 20_000);
    await waitForHttp(`${worker.url}/readyz`, worker.proc, 20_000);

    const readyz = async (base: string) => {
      const response = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(5_000) });
      return { status: response.status, body: (await response.json()) as unknown };
    };
    /** Polls /readyz until it answers `status`; how long that took. */
    const until = async (base: string, status: number, limitMs: number) => {
      const since = Date.now();
      for (;;) {
        const answer = await readyz(base);
        if (answer.status === status) return { ...answer, afterMs: Date.now() - since };
        if (Date.now() - since > limitMs)
          throw new Error(
            `${base}/readyz still ${answer.status} after ${limitMs} ms: ${JSON.stringify(answer.body)}`,
          );
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    };

    for (const { url } of [serve, worker])
      expect(await readyz(url)).toEqual({ status: 200, body: { status: 'ready' } });

    await cli(redis.port, 'REPLICAOF', '127.0.0.1', String(other.port));
    for (const { url } of [serve, worker]) {
      const answer = await until(url, 503, 3_000);
      expect(answer.body).toEqual({
        error: 'unavailable',
        message: 'connected to a Redis replica, not the primary',
      });
      expect(answer.afterMs).toBeLessThanOrEqual(3_000);
      console.info(`${url === serve.url ? 'serve' : 'worker'} /readyz 503 after ${answer.afterMs} ms`);
    }
    // Still running: not-ready is not a reason to exit.
    expect(serve.proc.child.exitCode).toBeNull();
    expect(worker.proc.child.exitCode).toBeNull();

    await cli(redis.port, 'REPLICAOF', 'NO', 'ONE');
    for (const { url } of [serve, worker]) {
      const answer = await until(url, 200, 3_000);
      expect(answer.body).toEqual({ status: 'ready' });
      console.info(`${url === serve.url ? 'serve' : 'worker'} /readyz 200 again after ${answer.afterMs} ms`);
    }
    // The log names the address and the reason (the /readyz body leaves the address out).
    expect(serve.proc.output()).toMatch(
      new RegExp(`Redis 127\\.0\\.0\\.1:${redis.port} is a (slave|replica), not a primary`),
    );
  });
});
