import { readFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { z } from 'zod';
import { configSchema, type Config } from './schema';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** `issuers.0.jwksUri: give exactly one of jwksUri or jwksFile` — the field first, so the fix is obvious. */
export const describeIssues = (error: z.ZodError): string =>
  error.issues.map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`).join('\n');

const deepFreeze = <T>(value: T): T => {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
};

/** Validates a config object; relative paths resolve against `baseDir`. The result is frozen. */
export function parseConfig(input: unknown, baseDir: string): Config {
  const result = configSchema.safeParse(input);
  if (!result.success) throw new ConfigError(`invalid configuration:\n${describeIssues(result.error)}`);
  const config = result.data;
  config.policies = path.resolve(baseDir, config.policies);
  for (const issuer of config.issuers) {
    if (issuer.jwksFile) issuer.jwksFile = path.resolve(baseDir, issuer.jwksFile);
  }
  const vault = config.vault;
  if (config.audit.file) config.audit.file = path.resolve(baseDir, config.audit.file);
  if (vault?.caCertFile) vault.caCertFile = path.resolve(baseDir, vault.caCertFile);
  if (vault?.auth.method === 'approle')
    vault.auth.secretIdFile = path.resolve(baseDir, vault.auth.secretIdFile);
  if (vault?.auth.method === 'jwt') vault.auth.jwtFile = path.resolve(baseDir, vault.auth.jwtFile);
  return deepFreeze(config);
}

/** Reads and validates the YAML file at `file`. */
export function loadConfigFile(file: string): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError(`cannot read config file ${file}: ${(error as Error).message}`);
  }
  let input: unknown;
  try {
    input = YAML.parse(text);
  } catch (error) {
    throw new ConfigError(`config file ${file} is not valid YAML: ${(error as Error).message}`);
  }
  return parseConfig(input, path.dirname(path.resolve(file)));
}
