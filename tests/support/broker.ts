import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseConfig } from '../../src/config/load-config';
import type { ConfigInput } from '../../src/config/schema';
import type { VaultSettings } from '../../src/config/vault-settings';
import { createLogger } from '../../src/observability/logger';
import { generateSigningJwks, loadSigningKeys, type SigningKeyRing } from '../../src/signing/signing-keys';
import { parseRedisTarget, type RedisTarget } from '../../src/config/redis-target';
import type { ApiContext } from '../../src/wiring/api-context';
import { createSharedContext } from '../../src/wiring/shared-context';
import { startApi, type RunningApi } from '../../src/wiring/serve';
import { startWorker, type RunningWorker } from '../../src/wiring/worker';
import { createTestIssuer, tempDir, type TestIssuer } from './fixtures';

export const testRedisUrl = (): string => {
  const url = process.env.TASKLEASE_TEST_REDIS_URL;
  if (!url)
    throw new Error(
      'TASKLEASE_TEST_REDIS_URL is unset: run the tests through jest (globalSetup starts Redis)',
    );
  return url;
};

/** The shared test Redis as the broker takes it. */
export const testRedisTarget = (): RedisTarget => parseRedisTarget(testRedisUrl());

/** A key prefix no other test uses: every test owns its keys and its BullMQ queue. */
export const uniquePrefix = (label: string) => `t-${label}-${randomBytes(4).toString('hex')}:`;

/** Policies that let the `agents` issuer work on OPS tickets, used unless a test brings its own. */
export const DEFAULT_POLICIES = `
@id("declare")
permit(principal, action == Action::"declareTask", resource) when { context.task.ticket like "OPS-*" };
@id("read")
permit(principal, action == Action::"issue", resource == Grant::"artifacts-read")
when { principal.issuer == "agents" && context.ttlSeconds <= 600 };
@id("write-main-only")
permit(principal, action == Action::"issue", resource == Grant::"artifacts-write")
when { context.task.ref == "refs/heads/main" };
`;

export interface TestBroker {
  url: string;
  prefix: string;
  config: ReturnType<typeof parseConfig>;
  configFile: string;
  signingKeys: SigningKeyRing;
  signingKeysJson: string;
  agents: TestIssuer;
  admins: TestIssuer;
  api: RunningApi;
  worker: RunningWorker | null;
  /** The API's context (its deps, Redis connection and keys). */
  context: ApiContext;
  /** JSON call with a Bearer token; returns status and parsed body. */
  call(
    method: string,
    route: string,
    token: string | null,
    body?: unknown,
  ): Promise<{ status: number; body: any }>;
  close(): Promise<void>;
}

export interface TestBrokerOptions {
  policies?: string;
  grants?: ConfigInput['grants'];
  broker?: ConfigInput['broker'];
  revocation?: ConfigInput['revocation'];
  extraIssuers?: TestIssuer[];
  /** false: no in-process worker (a test runs the real worker process instead). */
  worker?: boolean;
  resourceServers?: ConfigInput['resourceServers'];
  /** Another Redis than the shared test one (a test that stops its Redis), by URL or as a parsed target. */
  redisUrl?: string;
  redis?: RedisTarget;
  alerts?: ConfigInput['alerts'];
  audit?: ConfigInput['audit'];
  approvals?: ConfigInput['approvals'];
  entitlements?: ConfigInput['entitlements'];
  /** The broker's clock (API and worker), for a test that moves time on instead of waiting. */
  nowMs?: () => number;
  /** The API's HTTP server deadlines and connection cap (a test of slow clients sets short ones). */
  http?: ConfigInput['http'];
  /** The Vault connection, for vault grants. */
  vault?: VaultSettings;
  /** Break-glass entries (config `breakGlass`). */
  breakGlass?: ConfigInput['breakGlass'];
  /** Where log lines go (a test that reads them); the level is then `debug`. */
  logDestination?: { write(line: string): void };
}

/**
 * A broker on a free loopback port against the shared test Redis, under its own prefix: API, and by default
 * the real worker (BullMQ + sweeper) in the same process. Issuers: `agents` (workloads) and `corp` (admins:
 * oncall@example.com is admin, viewer@, revoker@ and approver@example.com hold the role of their name;
 * `artifacts-api` is a resource server).
 */
export async function startTestBroker(options: TestBrokerOptions = {}): Promise<TestBroker> {
  const dir = tempDir('broker');
  const agents = await createTestIssuer({ name: 'agents' });
  const admins = await createTestIssuer({ name: 'corp' });
  mkdirSync(path.join(dir, 'policies'));
  writeFileSync(path.join(dir, 'policies', 'test.cedar'), options.policies ?? DEFAULT_POLICIES);
  // A cluster needs a hash tag in the prefix ({t-…}:): the caller passes its own then.
  const prefix = options.broker?.redisPrefix ?? uniquePrefix('b');
  const input: ConfigInput = {
    issuers: [agents.config, admins.config, ...(options.extraIssuers ?? []).map((issuer) => issuer.config)],
    grants: options.grants ?? {
      'artifacts-read': {
        provider: 'jwt',
        audience: 'https://artifacts.test',
        scopes: ['artifacts:read'],
        maxTtlSeconds: 600,
      },
      'artifacts-write': {
        provider: 'jwt',
        audience: 'https://artifacts.test',
        scopes: ['artifacts:write'],
        maxTtlSeconds: 300,
      },
    },
    policies: './policies',
    admins: [
      { issuer: 'corp', subjects: ['oncall@example.com'], roles: ['admin'] },
      { issuer: 'corp', subjects: ['viewer@example.com'], roles: ['viewer'] },
      { issuer: 'corp', subjects: ['revoker@example.com'], roles: ['revoker'] },
      { issuer: 'corp', subjects: ['approver@example.com'], roles: ['approver'] },
    ],
    ...(options.breakGlass ? { breakGlass: options.breakGlass } : {}),
    resourceServers: options.resourceServers ?? [{ issuer: 'corp', subjects: ['artifacts-api'] }],
    broker: { issuer: 'tasklease-test', ...options.broker, redisPrefix: prefix },
    revocation: { backoffMs: 50, attempts: 3, ...options.revocation },
    ...(options.alerts ? { alerts: options.alerts } : {}),
    ...(options.audit ? { audit: options.audit } : {}),
    ...(options.approvals ? { approvals: options.approvals } : {}),
    ...(options.entitlements ? { entitlements: options.entitlements } : {}),
    ...(options.http ? { http: options.http } : {}),
  };
  const configFile = path.join(dir, 'tasklease.json');
  writeFileSync(configFile, JSON.stringify(input));
  const config = parseConfig(input, dir);
  const signingKeysJson = JSON.stringify(await generateSigningJwks());
  const signingKeys = await loadSigningKeys(signingKeysJson);
  const logger = options.logDestination
    ? createLogger('debug', options.logDestination)
    : createLogger(process.env.TEST_LOG_LEVEL ?? 'silent');
  const redis = options.redis ?? parseRedisTarget(options.redisUrl ?? testRedisUrl());
  const shared = await createSharedContext({
    config,
    redis,
    logger,
    vault: options.vault,
    nowMs: options.nowMs,
    autoPipelining: false,
  });
  const common = { config, redis, logger, host: '127.0.0.1', shared };
  const api = await startApi({ ...common, signingKeys, port: 0 });
  const worker = options.worker === false ? null : await startWorker({ ...common, port: null });
  const context = api.context;

  const call = async (method: string, route: string, token: string | null, body?: unknown) => {
    const response = await fetch(`${api.url}${route}`, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      /* not JSON: the raw text */
    }
    return { status: response.status, body: parsed as any };
  };

  return {
    url: api.url,
    prefix,
    config,
    configFile,
    signingKeys,
    signingKeysJson,
    agents,
    admins,
    api,
    worker,
    context,
    call,
    async close() {
      await api.close();
      await worker?.close();
      // The shared test Redis loses this test's keys; a test's own Redis (or topology) is its own to stop.
      if (shared.redis.status === 'ready' && !options.redis && !options.redisUrl)
        await shared.redis.eval(
          "local keys = redis.call('KEYS', ARGV[1]) for _, k in ipairs(keys) do redis.call('DEL', k) end return #keys",
          0,
          `${prefix}*`,
        );
      await shared.close();
    },
  };
}

/** Polls until `check` returns a truthy value or the deadline passes. */
export async function waitFor<T>(
  check: () => Promise<T | null | undefined | false>,
  timeoutMs: number,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
