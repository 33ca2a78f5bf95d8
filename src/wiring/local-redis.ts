import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:net';

import { RECOMMENDED_LISTPACK_VALUE } from '../redis/requirements';

export class RedisServerMissing extends Error {
  override name = 'RedisServerMissing';
  constructor() {
    super(
      'redis-server was not found on PATH. Install it (Debian/Ubuntu: apt-get install -y redis-server; ' +
        'macOS: brew install redis) or point REDIS_URL at a Redis with maxmemory-policy noeviction.',
    );
  }
}

/** A free loopback port, chosen by the kernel. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (!address || typeof address !== 'object') throw new Error('no free port');
  return address.port;
}

export interface LocalRedis {
  url: string;
  port: number;
  process: ChildProcess;
  stop(): Promise<void>;
}

/**
 * A redis-server child on a free loopback port, data in `dir`, configured as tasklease needs: noeviction,
 * append-only file for durability.
 */
export async function startLocalRedis(
  dir: string,
  options: { appendOnly?: boolean; port?: number } = {},
): Promise<LocalRedis> {
  if (spawnSync('redis-server', ['--version']).error) throw new RedisServerMissing();
  mkdirSync(dir, { recursive: true });
  const port = options.port ?? (await freePort());
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--save',
    '',
    '--appendonly',
    options.appendOnly === false ? 'no' : 'yes',
    '--maxmemory-policy',
    'noeviction',
    '--protected-mode',
    'yes',
    '--loglevel',
    'warning',
    // Keeps BullMQ's job hashes (an options field of ~160 bytes) in the compact encoding: ~400 B less a lease.
    '--hash-max-listpack-value',
    String(RECOMMENDED_LISTPACK_VALUE),
  ];
  const child = spawn('redis-server', args, { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `redis://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ready = await new Promise<boolean>((resolve) => {
      const probe = spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' });
      resolve(probe.stdout?.trim() === 'PONG');
    });
    if (ready) break;
    if (child.exitCode !== null || Date.now() > deadline)
      throw new Error(`redis-server did not start on port ${port}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    url,
    port,
    process: child,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
