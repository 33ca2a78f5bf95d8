import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { readEnv } from '../../src/config/env';
import { ConfigError, parseConfig } from '../../src/config/load-config';
import { resolveVaultSettings } from '../../src/config/vault-settings';
import { tempDir } from '../support/fixtures';

const PEM = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';

/** A config with one vault grant and the given `vault` block, resolved as the broker does at start-up. */
function configWith(vault?: Record<string, unknown>, dir = '/etc/tasklease') {
  return parseConfig(
    {
      issuers: [{ name: 'ci', kind: 'oidc', issuer: 'https://ci', jwksFile: 'k.json', audiences: ['tl'] }],
      grants: { deploy: { provider: 'vault', mode: 'token', policies: ['deploy'], maxTtlSeconds: 900 } },
      policies: './policies',
      ...(vault ? { vault } : {}),
    },
    dir,
  );
}

const resolve = (vault: Record<string, unknown> | undefined, env: Record<string, string>, dir?: string) =>
  resolveVaultSettings(configWith(vault, dir), readEnv(env));

describe('resolveVaultSettings', () => {
  it('reads Vault’s standard variables when the config says nothing', () => {
    const dir = tempDir('vault-settings');
    writeFileSync(path.join(dir, 'ca.pem'), PEM);
    const settings = resolve(undefined, {
      VAULT_ADDR: 'https://vault.internal:8200/',
      VAULT_TOKEN: 'hvs.broker',
      VAULT_NAMESPACE: 'team-a',
      VAULT_CACERT: path.join(dir, 'ca.pem'),
      VAULT_CLIENT_TIMEOUT: '30s',
    });
    expect(settings).toEqual({
      address: 'https://vault.internal:8200',
      namespace: 'team-a',
      caCertPem: PEM,
      timeoutMs: 30_000,
      auth: { method: 'token', token: 'hvs.broker' },
    });
  });

  it('lets the config block win over the variables, and resolves its files against the config directory', () => {
    const dir = tempDir('vault-settings');
    writeFileSync(path.join(dir, 'ca.pem'), PEM);
    const settings = resolve(
      {
        address: 'https://vault-b:8200',
        namespace: 'team-b',
        caCertFile: './ca.pem',
        timeoutSeconds: 5,
        auth: { method: 'approle', roleId: 'tasklease', secretIdFile: './secret-id' },
      },
      { VAULT_ADDR: 'https://vault-a:8200', VAULT_NAMESPACE: 'team-a', VAULT_CLIENT_TIMEOUT: '30' },
      dir,
    );
    expect(settings).toMatchObject({
      address: 'https://vault-b:8200',
      namespace: 'team-b',
      caCertPem: PEM,
      timeoutMs: 5000,
      auth: {
        method: 'approle',
        mount: 'approle',
        roleId: 'tasklease',
        secretIdFile: path.join(dir, 'secret-id'),
      },
    });
  });

  it('defaults the timeout to 10 seconds', () => {
    expect(resolve(undefined, { VAULT_ADDR: 'http://127.0.0.1:8200', VAULT_TOKEN: 't' })?.timeoutMs).toBe(
      10_000,
    );
  });

  it('is null when no grant uses Vault', () => {
    const config = parseConfig(
      {
        issuers: [{ name: 'ci', kind: 'oidc', issuer: 'https://ci', jwksFile: 'k.json', audiences: ['tl'] }],
        grants: { api: { provider: 'jwt', audience: 'a', maxTtlSeconds: 60 } },
        policies: './policies',
      },
      '/etc',
    );
    expect(resolveVaultSettings(config, readEnv({}))).toBeNull();
  });

  it.each([
    ['no address', undefined, { VAULT_TOKEN: 't' }, /set VAULT_ADDR or vault\.address/],
    ['token auth without VAULT_TOKEN', undefined, { VAULT_ADDR: 'https://v:8200' }, /need VAULT_TOKEN/],
    [
      'a namespace that is not a path',
      undefined,
      { VAULT_ADDR: 'https://v:8200', VAULT_TOKEN: 't', VAULT_NAMESPACE: 'a b' },
      /VAULT_NAMESPACE is not a namespace path/,
    ],
    [
      'a CA bundle that cannot be read',
      { caCertFile: '/nonexistent/ca.pem' },
      { VAULT_ADDR: 'https://v:8200', VAULT_TOKEN: 't' },
      /cannot read the Vault CA bundle \/nonexistent\/ca\.pem/,
    ],
  ])('fails at start-up on %s', (_name, vault, env, expected) => {
    expect(() => resolve(vault, env)).toThrow(ConfigError);
    expect(() => resolve(vault, env)).toThrow(expected);
  });

  it('refuses a CA file that holds no certificate', () => {
    const dir = tempDir('vault-settings');
    writeFileSync(path.join(dir, 'ca.pem'), 'not a certificate');
    expect(() =>
      resolve({ caCertFile: path.join(dir, 'ca.pem') }, { VAULT_ADDR: 'https://v:8200', VAULT_TOKEN: 't' }),
    ).toThrow(/holds no PEM certificate/);
  });

  it.each([
    ['0 (no timeout at all)', '0'],
    ['a Go duration in minutes', '1m'],
    ['more than 300 seconds', '301'],
  ])('refuses a VAULT_CLIENT_TIMEOUT of %s', (_name, value) => {
    expect(() =>
      resolve(undefined, { VAULT_ADDR: 'https://v:8200', VAULT_TOKEN: 't', VAULT_CLIENT_TIMEOUT: value }),
    ).toThrow(/VAULT_CLIENT_TIMEOUT must be 1-300 seconds/);
  });

  it('refuses plain http to anything but loopback: the token and login secrets would travel in clear', () => {
    expect(() => resolve(undefined, { VAULT_ADDR: 'http://vault.internal:8200', VAULT_TOKEN: 't' })).toThrow(
      /must be https:\/\/ \(http:\/\/ only on loopback\)/,
    );
    expect(resolve(undefined, { VAULT_ADDR: 'http://127.0.0.1:8200', VAULT_TOKEN: 't' })?.address).toBe(
      'http://127.0.0.1:8200',
    );
  });

  it('ignores malformed Vault variables when no grant uses Vault: they cannot stop the broker', () => {
    const config = parseConfig(
      {
        issuers: [{ name: 'ci', kind: 'oidc', issuer: 'https://ci', jwksFile: 'k.json', audiences: ['tl'] }],
        grants: { api: { provider: 'jwt', audience: 'a', maxTtlSeconds: 60 } },
        policies: './policies',
      },
      '/etc',
    );
    const env = readEnv({ VAULT_ADDR: 'not a url', VAULT_CLIENT_TIMEOUT: '1m' });
    expect(resolveVaultSettings(config, env)).toBeNull();
  });
});
