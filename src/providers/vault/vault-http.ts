import axios from 'axios';
import https from 'node:https';
import createNodeVault from 'node-vault';
import type { VaultSettings } from '../../config/vault-settings';

/** What went wrong with a call, in the terms the broker acts on. */
export type VaultFailure =
  /** No answer: connection refused or reset, a timeout, a TLS failure. */
  | 'unreachable'
  | 'sealed'
  /** 5xx, 429 (rate limited), 412 (a standby not caught up): try again later. */
  | 'unavailable'
  /** 403: the token is missing, expired, revoked, or its policy does not allow this path. */
  | 'denied'
  | 'not-found'
  /** Any other 4xx: the request itself is wrong; repeating it cannot help. */
  | 'invalid';

const RETRYABLE: ReadonlySet<VaultFailure> = new Set(['unreachable', 'sealed', 'unavailable']);

/**
 * A failed Vault call. Built from the status and Vault's `errors` only: the client library's own error
 * carries the request, headers and all, and with them the broker's token, so it never travels further.
 */
export class VaultRequestError extends Error {
  override name = 'VaultRequestError';
  constructor(
    readonly failure: VaultFailure,
    readonly status: number | undefined,
    readonly errors: readonly string[],
    message: string,
  ) {
    super(message);
  }
  get retryable(): boolean {
    return RETRYABLE.has(this.failure);
  }
  /** Vault's words, e.g. `invalid accessor`, for callers that must tell one 400 from another. */
  says(text: string): boolean {
    return this.errors.some((error) => error.includes(text));
  }
}

export type VaultMethod = 'GET' | 'POST';

export interface VaultCall {
  /** The token to send as X-Vault-Token; omitted for the login endpoints, which take none. */
  token?: string;
  namespace?: string;
  body?: Record<string, unknown>;
}

/** The parts of Vault's response envelope the broker reads. */
export interface VaultResponse {
  lease_id?: string;
  lease_duration?: number;
  renewable?: boolean;
  data?: unknown;
  auth?: VaultAuthBlock | null;
}

/** Logins, token creation and renewals answer with Vault's `auth` block. */
export interface VaultAuthBlock {
  client_token?: string;
  accessor?: string;
  lease_duration?: number;
  renewable?: boolean;
}

/** One HTTP call to Vault; resolves with the parsed body (undefined for a 204). */
export type VaultHttp = (
  method: VaultMethod,
  path: string,
  call: VaultCall,
) => Promise<VaultResponse | undefined>;

const oneLine = (text: string) =>
  text
    .replace(/\s+/g, ' ')
    .replace(/^1 error occurred: \* /, '')
    .trim();

function failureOf(status: number, errors: readonly string[]): VaultFailure {
  // A redirect (a standby without request forwarding) is not followed: point VAULT_ADDR at the active node.
  if (status >= 300 && status < 400) return 'unavailable';
  if (status === 503 && errors.some((error) => /sealed/i.test(error))) return 'sealed';
  if (status >= 500 || status === 429 || status === 412) return 'unavailable';
  if (status === 403) return 'denied';
  if (status === 404) return 'not-found';
  return 'invalid';
}

function toRequestError(error: unknown, method: VaultMethod, path: string): VaultRequestError {
  const response = (error as { response?: { statusCode?: number; body?: { errors?: unknown } } }).response;
  if (typeof response?.statusCode === 'number') {
    const raw = Array.isArray(response.body?.errors) ? response.body.errors : [];
    const errors = raw.filter((entry): entry is string => typeof entry === 'string').map(oneLine);
    const said = errors.length ? errors.join('; ') : 'no error text';
    return new VaultRequestError(
      failureOf(response.statusCode, errors),
      response.statusCode,
      errors,
      `Vault ${method} ${path} answered ${response.statusCode}: ${said}`,
    );
  }
  // Transport errors: keep the code (ECONNREFUSED, ECONNABORTED, CERT_HAS_EXPIRED...), nothing else.
  const code = (error as { code?: unknown }).code;
  const why = typeof code === 'string' ? code : (error as Error).name || 'network error';
  return new VaultRequestError('unreachable', undefined, [], `Vault ${method} ${path} unreachable: ${why}`);
}

/**
 * The one HTTP transport node-vault gets (its `request-promise` hook), so nothing is left to its defaults:
 * redirects are never followed (axios would carry X-Vault-Token and a login body to any Location, another
 * host or plain http included), proxy variables are ignored, TLS is always verified (VAULT_SKIP_VERIFY is
 * not honoured) against the system CAs or the bundle given, and every call has the timeout.
 */
function transport(settings: Pick<VaultSettings, 'caCertPem' | 'timeoutMs'>) {
  const client = axios.create({
    maxRedirects: 0,
    proxy: false,
    timeout: settings.timeoutMs,
    validateStatus: () => true,
    httpsAgent: new https.Agent({
      rejectUnauthorized: true,
      ...(settings.caCertPem ? { ca: settings.caCertPem } : {}),
    }),
  });
  const send = async (options: {
    method: string;
    uri: string;
    headers?: Record<string, string>;
    json?: unknown;
  }) => {
    const response = await client.request({
      method: options.method,
      url: options.uri,
      headers: options.headers,
      data: typeof options.json === 'object' ? options.json : undefined,
    });
    return {
      statusCode: response.status,
      body: response.data,
      request: { path: new URL(options.uri).pathname },
    };
  };
  return { defaults: () => send };
}

/**
 * The real node-vault client, held so that it never acts on its own: its token, namespace and path prefix
 * are cleared (node-vault would otherwise take VAULT_TOKEN, VAULT_NAMESPACE and VAULT_PREFIX from the
 * environment), each call passes its token and namespace explicitly, its transport is ours (above), and its
 * debug output (which prints request bodies, login secrets included) goes nowhere. Only the generic `read`
 * and `write` are used: the token helpers such as `tokenCreate()` would replace the client's token with
 * the child token they create.
 */
export function createVaultHttp(
  settings: Pick<VaultSettings, 'address' | 'caCertPem' | 'timeoutMs'>,
): VaultHttp {
  const options: createNodeVault.VaultOptions = {
    apiVersion: 'v1',
    endpoint: settings.address,
    'request-promise': transport(settings),
    debug: () => undefined,
  };
  const client = createNodeVault(options) as Omit<createNodeVault.client, 'token'> & {
    token?: string;
    namespace?: string;
    pathPrefix: string;
  };
  client.token = undefined;
  client.namespace = undefined;
  client.pathPrefix = '';

  return async (method, path, call) => {
    const headers: Record<string, string> = {};
    if (call.token) headers['X-Vault-Token'] = call.token;
    if (call.namespace) headers['X-Vault-Namespace'] = call.namespace;
    let answer: unknown;
    try {
      answer =
        method === 'GET'
          ? await client.read(path, { headers })
          : await client.write(path, call.body ?? {}, { headers });
    } catch (error) {
      throw toRequestError(error, method, path);
    }
    // A 200 that is not Vault's JSON (a proxy's page, a wrong address) proves nothing was done.
    if (answer !== undefined && answer !== '' && (typeof answer !== 'object' || answer === null))
      throw new VaultRequestError(
        'unavailable',
        200,
        [],
        `Vault ${method} ${path} answered something that is not Vault's JSON`,
      );
    return (answer || undefined) as VaultResponse | undefined;
  };
}
