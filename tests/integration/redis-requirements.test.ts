import { createLogger } from '../../src/observability/logger';
import { parseConfig } from '../../src/config/load-config';
import { createSharedContext } from '../../src/wiring/shared-context';
import { parseRedisTarget } from '../../src/config/redis-target';
import { startLocalRedis } from '../../src/wiring/local-redis';
import { connectRedis, waitForReady } from '../../src/redis/connection';
import { createTestIssuer, tempDir } from '../support/fixtures';
import { writeFileSync } from 'node:fs';
import path from 'node:path';

describe('Redis requirements at start-up', () => {
  it('refuses a Redis that may evict keys, naming the setting to change', async () => {
    const redis = await startLocalRedis(tempDir('evicting'), { appendOnly: false });
    const admin = connectRedis(parseRedisTarget(redis.url));
    try {
      await waitForReady(admin, 10_000);
      await admin.config('SET', 'maxmemory-policy', 'allkeys-lru');
      const dir = tempDir('cfg');
      writeFileSync(path.join(dir, 'p.cedar'), 'permit(principal, action, resource) when { false };');
      const issuer = await createTestIssuer({ name: 'agents' });
      const config = parseConfig({ issuers: [issuer.config], grants: {}, policies: './p.cedar' }, dir);
      await expect(
        createSharedContext({
          config,
          redis: parseRedisTarget(redis.url),
          logger: createLogger('silent'),
          autoPipelining: false,
        }),
      ).rejects.toThrow(/maxmemory-policy is "allkeys-lru".*noeviction/);
    } finally {
      admin.disconnect();
      await redis.stop();
    }
  });
});
