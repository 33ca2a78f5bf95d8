import { readFileSync } from 'node:fs';
import type { VaultSettings } from '../../config/vault-settings';
import type { Logger } from '../../observability/logger';
import { VaultRequestError, type VaultAuthBlock, type VaultHttp, type VaultResponse } from './vault-http';

/** Renew (or log in again) when this much of the token's TTL has passed. */
const RENEW_AT_FRACTION = 2 / 3;
/** Failed logins and renewals are retried after 1, 2, 4 ... s, at most this long apart. */
const RETRY_MAX_MS = 30_000;
/** A login token this close to its expiry (at most a third of its TTL) is not used: a fresh login comes first. */
const EXPIRY_MARGIN_MS = 5_000;

const backoffMs = (failures: number) => Math.min(RETRY_MAX_MS, 1000 * 2 ** Math.max(0, failures - 1));

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
   * Vault answered `rejected` with 403. That is also its answer to a path the policy lacks, so the token is
   * replaced only when Vault no longer knows it (its own lookup-self is refused too); then a login method
   * logs in again and says true: the call is worth one more try. Otherwise, or with a static VAULT_TOKEN,
   * false. Logging in on every 403 would let anyone asking for a misconfigured grant churn the broker's
   * token, and with it every credential created under the old one.
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
  /** The longest `maxTtlSeconds` of the vault grants: a broker token much shorter-lived is warned about. */
  longestGrantSeconds: number;
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
  /** Consecutive failures, for the backoff; a failed login also holds further logins off until retryAtMs. */
  let failures = 0;
  let loginError: { error: unknown; retryAtMs: number } | null = null;
  let closed = false;

  const later = (ms: number, action: () => Promise<unknown>) => {
    clearTimeout(timer);
    if (closed) return;
    timer = setTimeout(() => void action().catch(() => undefined), Math.max(1000, ms));
    timer.unref();
  };

  /** What to do next with a token that has `ttlSeconds` left: renew it, replace it, or nothing. */
  function plan(ttlSeconds: number, renewable: boolean) {
    failures = 0;
    expiresAtMs = ttlSeconds > 0 ? nowMs() + ttlSeconds * 1000 : Infinity;
    marginMs = Math.min(EXPIRY_MARGIN_MS, (ttlSeconds * 1000) / 3);
    if (ttlSeconds <= 0) return;
    const dueMs = ttlSeconds * 1000 * RENEW_AT_FRACTION;
    if (renewable) later(dueMs, renew);
    else if (loginPath) later(dueMs, login);
    else
      logger.warn({ expiresAt: new Date(expiresAtMs).toISOString() }, 'vault: VAULT_TOKEN is not renewable');
  }

  /** Credentials created under the broker's token die with it: say so when it could die before them. */
  function checkLifetime(ttlSeconds: number) {
    if (ttlSeconds > 0 && ttlSeconds * (1 - RENEW_AT_FRACTION) < deps.longestGrantSeconds)
      logger.warn(
        { ttlSeconds, longestGrantSeconds: deps.longestGrantSeconds },
        'vault: the broker token TTL is short for the vault grants: credentials created under it die with it ' +
          'if this process stops renewing it (use a periodic token or a token role with orphan=true; docs/vault.md)',
      );
  }

  function retry(action: () => Promise<unknown>) {
    failures += 1;
    later(backoffMs(failures), action);
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
      if (!answer?.auth?.client_token) throw new Error(`Vault ${loginPath} answered without a token`);
    } catch (error) {
      logger.error({ err: (error as Error).message, method: auth.method }, 'vault: broker login failed');
      failures += 1;
      loginError = { error, retryAtMs: nowMs() + backoffMs(failures) };
      if (!(error instanceof VaultRequestError) || error.retryable) later(backoffMs(failures), login);
      throw error;
    }
    const block = answer.auth;
    loginError = null;
    token = block.client_token as string;
    plan(block.lease_duration ?? 0, block.renewable === true);
    checkLifetime(block.lease_duration ?? 0);
    logger.info({ method: auth.method, ttlSeconds: block.lease_duration }, 'vault: broker logged in');
    return token;
  }

  function login(): Promise<string> {
    // After a failed login the next waits its turn: every request must not become a login attempt.
    if (!loggingIn && loginError && nowMs() < loginError.retryAtMs) return Promise.reject(loginError.error);
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
      if (!final) retry(renew);
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
      checkLifetime(data?.ttl ?? 0);
    } catch (error) {
      logger.warn({ err: (error as Error).message }, 'vault: looking up VAULT_TOKEN failed');
      if (error instanceof VaultRequestError && error.retryable) retry(lookupStatic);
    }
  }

  /** True when Vault refuses the token's own lookup too: the token is gone, not merely short of a policy. */
  async function isDead(candidate: string): Promise<boolean> {
    try {
      await http('GET', 'auth/token/lookup-self', { token: candidate, namespace });
      return false;
    } catch (error) {
      return error instanceof VaultRequestError && error.failure === 'denied';
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
      if (token !== rejected) return true;
      if (!(await isDead(rejected))) return false;
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
