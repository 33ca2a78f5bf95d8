import { z } from 'zod';
import { describeIssues, ConfigError } from './load-config';
import { parseRedisTarget, RedisTargetError, type RedisTarget } from './redis-target';

/**
 * The process environment, read once here and nowhere else. Secrets (signing keys) come only from here
 * and have no default.
 */
const envSchema = z.object({
  TASKLEASE_CONFIG: z.string().min(1).optional(),
  /** The topology and its addresses (config/redis-target.ts); parsed with the two passwords below. */
  REDIS_URL: z.string().min(1).optional(),
  /** The data nodes' password, when REDIS_URL holds none (a secret: never logged). */
  REDIS_PASSWORD: z.string().min(1).optional(),
  /** The sentinels' password (redis+sentinel:// only; a secret: never logged). */
  REDIS_SENTINEL_PASSWORD: z.string().min(1).optional(),
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  HOST: z.string().min(1).default('127.0.0.1'),
  WORKER_PORT: z.coerce.number().int().min(0).max(65535).default(8081),
  TASKLEASE_SIGNING_KEYS: z.string().min(1).optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  TASKLEASE_ADDR: z.string().min(1).default('http://127.0.0.1:8080'),
  TASKLEASE_TOKEN: z.string().min(1).optional(),
  /** The task `tasklease credential-process` issues in, when `--task` is not given. */
  TASKLEASE_TASK: z.string().min(1).optional(),
  /** Where `tasklease credential-process` keeps sessions between runs (default ~/.cache/tasklease). */
  TASKLEASE_CACHE_DIR: z.string().min(1).optional(),
  /**
   * Vault's standard variables, read as the Vault CLI reads them; the config's `vault` block wins. Checked
   * where they are used (config/vault-settings.ts), so a stray one cannot stop a broker without vault grants.
   */
  VAULT_ADDR: z.string().optional(),
  VAULT_TOKEN: z.string().optional(),
  VAULT_NAMESPACE: z.string().optional(),
  VAULT_CACERT: z.string().optional(),
  VAULT_CLIENT_TIMEOUT: z.string().optional(),
  /** `tasklease exec`: GitHub Actions' OIDC token endpoint (set by the runner with id-token: write). */
  ACTIONS_ID_TOKEN_REQUEST_URL: z.string().optional(),
  ACTIONS_ID_TOKEN_REQUEST_TOKEN: z.string().optional(),
  /** `tasklease exec`: the job's OIDC token, e.g. a GitLab `id_tokens:` entry of this name. */
  TASKLEASE_ID_TOKEN: z.string().optional(),
  /** `tasklease exec`: GitHub's job name, the default `--job`. */
  GITHUB_JOB: z.string().optional(),
  TASKLEASE_DEV_DIR: z.string().min(1).default('.tasklease'),
});

export type Env = z.output<typeof envSchema> & {
  /** REDIS_URL with the passwords, parsed once; undefined when REDIS_URL is unset. */
  redis: RedisTarget | undefined;
};

export function readEnv(source: NodeJS.ProcessEnv = process.env): Env {
  const result = envSchema.safeParse(source);
  if (!result.success) throw new ConfigError(`invalid environment:\n${describeIssues(result.error)}`);
  const { REDIS_URL, REDIS_PASSWORD, REDIS_SENTINEL_PASSWORD } = result.data;
  try {
    const redis = REDIS_URL
      ? parseRedisTarget(REDIS_URL, { password: REDIS_PASSWORD, sentinelPassword: REDIS_SENTINEL_PASSWORD })
      : undefined;
    return Object.freeze({ ...result.data, redis });
  } catch (error) {
    if (error instanceof RedisTargetError) throw new ConfigError(`invalid environment:\n${error.message}`);
    throw error;
  }
}

/** One variable named at run time (`tasklease exec --token-env NAME`); everything else goes through readEnv. */
export const readVariable = (name: string, source: NodeJS.ProcessEnv = process.env): string | undefined =>
  source[name];

/** The whole environment, for a command `tasklease exec` runs: it inherits everything, credentials added. */
export const inheritedEnvironment = (): NodeJS.ProcessEnv => ({ ...process.env });
