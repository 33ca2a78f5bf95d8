import { readFileSync } from 'node:fs';
import type { VaultSettings } from '../../config/vault-settings';
import type { Logger } from '../../observability/logger';
import { VaultRequestError, type VaultAuthBlock, type VaultHttp, type VaultResponse } from './vault-http';

/** Renew (or log in again) when this much of the token's TTL has passed. */
const RENEW_AT_FRACTION = 2 / 3;
/** A renewal that failed for want of Vault is tried again this soon (bounded by the time left). */
const RETRY_MAX_MS = 30_000;
/** A login token this close to its expiry (at most a third of its TTL) is not used: a fresh login comes first. */
const EXPIRY_MARGIN_MS = 5_000;

/**
 * The broker's own identity at Vault: VAULT_TOKEN, or a login by AppRole or JWT. The token is renewed at
 * two thirds of its TTL while Vault allows; when it cannot be renewed any further (its max TTL) a login
 * method logs in afresh. The old token is left to expire, never revoked: the child tokens and leases the
 * broker created under it would go with it.
 */
export interface BrokerToken {
  /** The token to call Vault with, logging in first when there is none or it is about to expire. */
  current(): Promise<string>;
  /**
   * Vault refused `rejected` (403). A login method logs in again and says true: the call is worth one more
   * try. A static VAULT_TOKEN cannot be replaced: false.
   */
  replace(rejected: string): Promise<boolean>;
  /** Starts renewal in the background (a login, or a lookup of VAULT_TOKEN); failures are only logged. */
  start(): void;
  close(): void;
}

export function createBrokerToken(deps: {
  settings: Pick<VaultSettings, 'auth' | 'namespace'>;
  http: VaultHttp;
  logger: Logger;
  readFile?: (file: string) => string;
  nowMs?: () => number;
}): BrokerToken {
  const { settings, http, logger } = deps;
  const { auth, namespace } = settings;
  const readFile = deps.readFile ?? ((file: string) => readFileSync(file, 'utf8').trim());
  const nowMs = deps.nowMs ?? Date.now;
  const loginPath = auth.method === 'token' ? null : `auth/${auth.mount}/login`;

  let token: string | null = auth.method === 'token' ? auth.token : null;
  let expiresAtMs = Infinity;
  let marginMs = EXPIRY_MARGIN_MS;
  let timer: NodeJS.Timeout | undefined;
  let loggingIn: Promise<string> | null = null;
  let closed = false;

  const later = (ms: number, action: () => Promise<unknown>) => {
    clearTimeout(timer);
    if (closed) return;
    timer = setTimeout(() => void action().catch(() => undefined), Math.max(1000, ms));
    timer.unref();
  };

  /** What to do next with a token that has `ttlSeconds` left: renew it, replace it, or nothing. */
  function plan(ttlSeconds: number, renewable: boolean) {
    expiresAtMs = ttlSeconds > 0 ? nowMs() + ttlSeconds * 1000 : Infinity;
    marginMs = Math.min(EXPIRY_MARGIN_MS, (ttlSeconds * 1000) / 3);
    if (ttlSeconds <= 0) return;
    const dueMs = ttlSeconds * 1000 * RENEW_AT_FRACTION;
    if (renewable) later(dueMs, renew);
    else if (loginPath) later(dueMs, login);
    else
      logger.warn({ expiresAt: new Date(expiresAtMs).toISOString() }, 'vault: VAULT_TOKEN is not renewable');
  }

  function retrySoon(action: () => Promise<unknown>) {
    const leftMs = expiresAtMs - nowMs();
    later(Math.min(RETRY_MAX_MS, Number.isFinite(leftMs) ? leftMs / 4 : RETRY_MAX_MS), action);
  }

  function loginBody(): Record<string, unknown> {
    if (auth.method === 'approle') return { role_id: auth.roleId, secret_id: readFile(auth.secretIdFile) };
    if (auth.method === 'jwt') return { role: auth.role, jwt: readFile(auth.jwtFile) };
    throw new Error('a static VAULT_TOKEN has no login');
  }

  async function doLogin(): Promise<string> {
    if (!loginPath) throw new Error('a static VAULT_TOKEN has no login');
    let answer: VaultResponse | undefined;
    try {
      answer = await http('POST', loginPath, { namespace, body: loginBody() });
    } catch (error) {
      logger.error({ err: (error as Error).message, method: auth.method }, 'vault: broker login failed');
      if (!(error instanceof VaultRequestError) || error.retryable) retrySoon(login);
      throw error;
    }
    const block = answer?.auth;
    if (!block?.client_token) throw new Error(`Vault ${loginPath} answered without a token`);
    token = block.client_token;
    plan(block.lease_duration ?? 0, block.renewable === true);
    logger.info({ method: auth.method, ttlSeconds: block.lease_duration }, 'vault: broker logged in');
    return block.client_token;
  }

  function login(): Promise<string> {
    loggingIn ??= doLogin().finally(() => {
      loggingIn = null;
    });
    return loggingIn;
  }

  async function renew(): Promise<void> {
    const renewing = token;
    if (!renewing) return;
    const leftMs = expiresAtMs - nowMs();
    let block: VaultAuthBlock | null | undefined;
    try {
      block = (await http('POST', 'auth/token/renew-self', { token: renewing, namespace, body: {} }))?.auth;
    } catch (error) {
      const message = (error as Error).message;
      logger.warn({ err: message }, 'vault: renewing the broker token failed');
      const final = error instanceof VaultRequestError && !error.retryable;
      // A token Vault refuses to renew is gone or at its end: a login method starts afresh; VAULT_TOKEN cannot.
      if (!final) retrySoon(renew);
      else if (loginPath) await login();
      else logger.error({ err: message }, 'vault: VAULT_TOKEN can no longer be renewed; replace it');
      return;
    }
    const ttlSeconds = block?.lease_duration ?? 0;
    // Vault caps a renewal at the token's max TTL: a renewal that did not push the expiry out is the last.
    if (ttlSeconds * 1000 <= leftMs + 1000) {
      expiresAtMs = nowMs() + ttlSeconds * 1000;
      if (loginPath) later(ttlSeconds * 1000 * RENEW_AT_FRACTION, login);
      else
        logger.warn(
          { expiresAt: new Date(expiresAtMs).toISOString() },
          'vault: VAULT_TOKEN reaches its max TTL',
        );
      return;
    }
    plan(ttlSeconds, block?.renewable !== false);
    logger.info({ ttlSeconds }, 'vault: broker token renewed');
  }

  /** VAULT_TOKEN: learn its TTL once, then renew it like a login token. */
  async function lookupStatic(): Promise<void> {
    try {
      const answer = await http('GET', 'auth/token/lookup-self', { token: token ?? '', namespace });
      const data = answer?.data as { ttl?: number; renewable?: boolean } | undefined;
      plan(data?.ttl ?? 0, data?.renewable === true);
    } catch (error) {
      logger.warn({ err: (error as Error).message }, 'vault: looking up VAULT_TOKEN failed');
      if (error instanceof VaultRequestError && error.retryable) retrySoon(lookupStatic);
    }
  }

  return {
    async current() {
      if (token && nowMs() < expiresAtMs - marginMs) return token;
      if (!loginPath && token) return token;
      return login();
    },
    async replace(rejected) {
      if (!loginPath) return false;
      if (token === rejected) {
        token = null;
        await login();
      }
      return true;
    },
    start() {
      if (loginPath) void login().catch(() => undefined);
      else void lookupStatic();
    },
    close() {
      closed = true;
      clearTimeout(timer);
    },
  };
}
