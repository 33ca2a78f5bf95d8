import pino, { type Logger } from 'pino';

/**
 * Structured logs. Secrets never reach a log line: nothing logs bodies or headers wholesale, and these paths
 * are censored in case a future line tries.
 */
export const REDACTED_PATHS = [
  'token',
  'credential',
  'subject_token',
  'access_token',
  'authorization',
  'secretAccessKey',
  'sessionToken',
  '*.token',
  '*.credential',
  '*.subject_token',
  '*.access_token',
  '*.authorization',
  '*.secretAccessKey',
  '*.sessionToken',
  // Vault: the tokens and login secrets in its request and response bodies and headers.
  'client_token',
  'secret_id',
  '*.client_token',
  '*.secret_id',
  '*.jwt',
  '*["x-vault-token"]',
  '*["X-Vault-Token"]',
  'req.headers.authorization',
  'headers.authorization',
];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    { level, base: { service: 'tasklease' }, redact: { paths: REDACTED_PATHS, censor: '[redacted]' } },
    destination,
  );
}

export type { Logger };
