import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { RedisServerMissing, startLocalRedis } from '../../src/wiring/local-redis';
import { assertMotoInstalled } from './moto';

/**
 * One redis-server for the whole run, on a free loopback port in a temp dir (never 6379). Every test file
 * uses its own key prefix and queue names, so files run in parallel against it. No redis-server: the run
 * fails with the install command; it never skips.
 */
export default async function globalSetup(): Promise<void> {
  // The AWS tests run against moto_server: without it the run fails here, saying how to install it.
  assertMotoInstalled();
  // The AWS SDK's default chain finds these first: no test can ever reach a real AWS account.
  Object.assign(process.env, {
    AWS_ACCESS_KEY_ID: 'testing',
    AWS_SECRET_ACCESS_KEY: 'testing',
    AWS_SESSION_TOKEN: 'testing',
    AWS_REGION: 'us-east-1',
    AWS_EC2_METADATA_DISABLED: 'true',
    AWS_CONFIG_FILE: '/dev/null',
    AWS_SHARED_CREDENTIALS_FILE: '/dev/null',
  });
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
