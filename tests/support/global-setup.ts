import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { RedisServerMissing, startLocalRedis } from '../../src/wiring/local-redis';

/**
 * One redis-server for the whole run, on a free loopback port in a temp dir (never 6379). Every test file
 * uses its own key prefix and queue names, so files run in parallel against it. No redis-server: the run
 * fails with the install command; it never skips.
 */
export default async function globalSetup(): Promise<void> {
  try {
    const redis = await startLocalRedis(mkdtempSync(path.join(tmpdir(), 'tasklease-test-redis-')), {
      appendOnly: false,
    });
    process.env.TASKLEASE_TEST_REDIS_URL = redis.url;
    (globalThis as Record<string, unknown>).__taskleaseRedis = redis;
  } catch (error) {
    if (error instanceof RedisServerMissing) {
      throw new Error(`${error.message}\nThe test suite needs it: apt-get install -y redis-server`);
    }
    throw error;
  }
}
