/** A small client for the admin API: `TASKLEASE_ADDR` and the caller's token in `TASKLEASE_TOKEN`, like the Vault CLI. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export function createApiClient(addr: string, token: string | undefined) {
  return async <T>(
    method: 'GET' | 'POST',
    path: string,
    body?: unknown,
    options: { signal?: AbortSignal } = {},
  ): Promise<T> => {
    if (!token) throw new ApiError(0, 'no_token', 'set TASKLEASE_TOKEN to your identity token');
    const response = await fetch(new URL(path, addr), {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      signal: options.signal,
    }).catch((error: Error) => {
      // Given up on by the caller (a signal, a deadline): not the broker's failure.
      if (options.signal?.aborted) throw error;
      throw new ApiError(0, 'unreachable', `cannot reach ${addr}: ${error.message}`);
    });
    const payload = (await response.json().catch(() => ({}))) as { error?: string; message?: string };
    if (!response.ok)
      throw new ApiError(response.status, payload.error ?? 'error', payload.message ?? response.statusText);
    return payload as T;
  };
}

export type ApiCall = ReturnType<typeof createApiClient>;
