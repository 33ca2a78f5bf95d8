import path from 'node:path';
import { loadConfigFile } from '../config/load-config';
import type { Env } from '../config/env';
import { resolveVaultSettings } from '../config/vault-settings';
import type { Logger } from '../observability/logger';
import { loadSigningKeys } from '../signing/signing-keys';
import { createBrokerContext } from './broker-context';
import { ensureDevFiles } from './dev-files';
import { startLocalRedis, type LocalRedis } from './local-redis';
import { startApi } from './serve';
import { startWorker } from './worker';

/**
 * `tasklease dev`: API and worker in one process, sharing one context; a local redis-server when REDIS_URL
 * is unset; a dev issuer and keys generated under the dev directory. For a first run, never for production.
 */
export async function startDev(env: Env, logger: Logger) {
  const devDir = path.resolve(env.TASKLEASE_DEV_DIR);
  const files = await ensureDevFiles(devDir);
  const config = loadConfigFile(env.TASKLEASE_CONFIG ?? files.configFile);
  const vault = resolveVaultSettings(config, env);
  const signingKeys = await loadSigningKeys(env.TASKLEASE_SIGNING_KEYS ?? files.signingKeysJson);
  let redis: LocalRedis | null = null;
  if (!env.REDIS_URL) {
    redis = await startLocalRedis(path.join(devDir, 'redis'));
    logger.info({ url: redis.url, dir: path.join(devDir, 'redis') }, 'started a local redis-server');
  }
  const redisUrl = env.REDIS_URL ?? (redis as LocalRedis).url;
  const context = await createBrokerContext({ config, redisUrl, signingKeys, logger, vault });
  const api = await startApi({
    config,
    redisUrl,
    signingKeys,
    logger,
    host: env.HOST,
    port: env.PORT,
    context,
  });
  const worker = await startWorker({ config, redisUrl, logger, host: env.HOST, port: null, context });
  return {
    api,
    worker,
    devDir,
    async close() {
      await api.close();
      await worker.close();
      await context.close();
      await redis?.stop();
    },
  };
}
