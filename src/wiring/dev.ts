import path from 'node:path';
import { loadConfigFile } from '../config/load-config';
import type { Env } from '../config/env';
import { resolveVaultSettings } from '../config/vault-settings';
import type { Logger } from '../observability/logger';
import { loadSigningKeys } from '../signing/signing-keys';
import { parseRedisTarget } from '../config/redis-target';
import { ensureDevFiles } from './dev-files';
import { startLocalRedis, type LocalRedis } from './local-redis';
import { startApi } from './serve';
import { createSharedContext } from './shared-context';
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
  const target = env.redis ?? parseRedisTarget((redis as LocalRedis).url);
  // Whatever started is stopped again when a later step fails, so the process can exit.
  const started: (() => Promise<void>)[] = redis ? [(redis as LocalRedis).stop] : [];
  const close = async () => {
    for (const stop of started.reverse()) await stop().catch(() => undefined);
  };
  try {
    // API and worker halves over one shared context (one connection, the same stores), each with its own part.
    const shared = await createSharedContext({ config, redis: target, logger, vault, autoPipelining: false });
    started.push(shared.close);
    const common = { config, redis: target, logger, host: env.HOST, shared };
    const api = await startApi({ ...common, signingKeys, port: env.PORT });
    started.push(api.close);
    const worker = await startWorker({ ...common, port: null });
    started.push(worker.close);
    return { api, worker, devDir, close };
  } catch (error) {
    await close();
    throw error;
  }
}
