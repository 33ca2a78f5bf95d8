import type { VaultSettings } from '../../config/vault-settings';
import type { Logger } from '../../observability/logger';
import { createBrokerToken } from './broker-token';
import { createVaultHttp, VaultRequestError, type VaultMethod, type VaultResponse } from './vault-http';

export interface VaultClient {
  /** The namespace calls go to when a grant names none; '' is the root namespace. */
  readonly defaultNamespace: string;
  /**
   * One call as the broker, always with the broker's own token, in `namespace` ('' = root; omitted = the
   * default). A login token Vault no longer knows is replaced by a fresh login and the call tried once
   * more: a 403 means Vault did nothing, so the retry cannot do anything twice.
   */
  call(
    method: VaultMethod,
    path: string,
    options?: { namespace?: string; body?: Record<string, unknown> },
  ): Promise<VaultResponse | undefined>;
  /** Logs in (or looks up VAULT_TOKEN) in the background so renewal starts before the first grant. */
  start(): void;
  close(): void;
}

export function createVaultClient(
  settings: VaultSettings,
  logger: Logger,
  options: { longestGrantSeconds: number },
): VaultClient {
  const http = createVaultHttp(settings);
  const brokerToken = createBrokerToken({ settings, http, logger, ...options });
  const defaultNamespace = settings.namespace ?? '';
  return {
    defaultNamespace,
    async call(method, path, options = {}) {
      const call = { namespace: options.namespace ?? defaultNamespace, body: options.body };
      const token = await brokerToken.current();
      try {
        return await http(method, path, { ...call, token });
      } catch (error) {
        const denied = error instanceof VaultRequestError && error.failure === 'denied';
        if (!denied || !(await brokerToken.replace(token))) throw error;
        return http(method, path, { ...call, token: await brokerToken.current() });
      }
    },
    start: () => brokerToken.start(),
    close: () => brokerToken.close(),
  };
}
