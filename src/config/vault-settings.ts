import { readFileSync } from 'node:fs';
import type { Env } from './env';
import { ConfigError } from './load-config';
import { vaultNamespace, type Config, type VaultConnectionConfig } from './schema';

const DEFAULT_VAULT_TIMEOUT_SECONDS = 10;
const MAX_VAULT_TIMEOUT_SECONDS = 300;
const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);

export type VaultAuthSettings =
  { method: 'token'; token: string } | Exclude<VaultConnectionConfig['auth'], { method: 'token' }>;

/** Everything the broker needs to talk to Vault, resolved once at start-up from the config and the env. */
export interface VaultSettings {
  address: string;
  namespace?: string;
  caCertPem?: string;
  timeoutMs: number;
  auth: VaultAuthSettings;
}

const hasVaultGrant = (config: Pick<Config, 'grants'>) =>
  Object.values(config.grants).some((grant) => grant.provider === 'vault');

function readCaBundle(file: string): string {
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read the Vault CA bundle ${file}: ${(error as Error).message}`);
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----'))
    throw new ConfigError(`the Vault CA bundle ${file} holds no PEM certificate`);
  return pem;
}

/** Vault's address. Plain http would carry the broker's token and login secrets in clear: loopback only. */
function checkAddress(address: string): string {
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    throw new ConfigError(`the Vault address is not a URL: ${address}`);
  }
  const loopbackHttp = url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname);
  if (url.protocol !== 'https:' && !loopbackHttp)
    throw new ConfigError(`the Vault address must be https:// (http:// only on loopback): ${address}`);
  return address.replace(/\/+$/, '');
}

/** VAULT_CLIENT_TIMEOUT as the Vault CLI writes it (`30` or `30s`); 0 would mean no timeout at all. */
function parseTimeout(value: string): number {
  const match = /^(\d+)s?$/.exec(value.trim());
  const seconds = match ? Number(match[1]) : NaN;
  if (!(seconds >= 1 && seconds <= MAX_VAULT_TIMEOUT_SECONDS))
    throw new ConfigError(
      `VAULT_CLIENT_TIMEOUT must be 1-${MAX_VAULT_TIMEOUT_SECONDS} seconds (e.g. 30 or 30s): ${value}`,
    );
  return seconds;
}

/**
 * The Vault connection: the config's `vault` block first, then Vault's standard variables, as the Vault CLI
 * reads them. Null when no grant uses Vault. Fails at start-up, not at the first request, when something
 * is missing. VAULT_SKIP_VERIFY is never honoured: the broker always verifies Vault's certificate.
 */
export function resolveVaultSettings(
  config: Pick<Config, 'grants' | 'vault'>,
  env: Pick<Env, 'VAULT_ADDR' | 'VAULT_TOKEN' | 'VAULT_NAMESPACE' | 'VAULT_CACERT' | 'VAULT_CLIENT_TIMEOUT'>,
): VaultSettings | null {
  if (!hasVaultGrant(config)) return null;
  const connection = config.vault;
  const address = connection?.address ?? env.VAULT_ADDR;
  if (!address) throw new ConfigError('vault grants need a Vault address: set VAULT_ADDR or vault.address');
  const timeoutSeconds =
    connection?.timeoutSeconds ??
    (env.VAULT_CLIENT_TIMEOUT ? parseTimeout(env.VAULT_CLIENT_TIMEOUT) : DEFAULT_VAULT_TIMEOUT_SECONDS);
  const namespace = connection?.namespace ?? env.VAULT_NAMESPACE;
  if (namespace !== undefined && !vaultNamespace.safeParse(namespace).success)
    throw new ConfigError(`VAULT_NAMESPACE is not a namespace path: ${namespace}`);
  const caFile = connection?.caCertFile ?? env.VAULT_CACERT;
  const configured = connection?.auth ?? { method: 'token' as const };
  let auth: VaultAuthSettings;
  if (configured.method === 'token') {
    if (!env.VAULT_TOKEN)
      throw new ConfigError(
        'vault grants with vault.auth.method token need VAULT_TOKEN (the broker’s own token)',
      );
    auth = { method: 'token', token: env.VAULT_TOKEN };
  } else {
    auth = configured;
  }
  return {
    address: checkAddress(address),
    namespace,
    caCertPem: caFile ? readCaBundle(caFile) : undefined,
    timeoutMs: timeoutSeconds * 1000,
    auth,
  };
}
