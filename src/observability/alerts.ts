import type { Logger } from './logger';

export interface IrrevocableLease {
  leaseId: string;
  grant: string;
  provider: string;
  task: string;
  issuer: string;
  subject: string;
  reason: string;
  atMs: number;
}

export interface IrrevocableAlerts {
  notify(lease: IrrevocableLease): void;
  /** Sends what is pending now (shutdown). */
  flush(): Promise<void>;
}

/** At most this many leases are listed in one alert; `count` still says how many there were. */
const MAX_LISTED = 100;
const ATTEMPTS = 3;
const TIMEOUT_MS = 5_000;

/**
 * A webhook for leases that became irrevocable, debounced: the first one opens a window of `debounceMs`,
 * and everything that happens in it goes out as one POST when it closes, so a failing backend pages once,
 * not once per lease. Best effort (three tries, then logged): the irrevocable list, its metric and the
 * sweeper's retries are the authority. The URL is never logged: webhook URLs often carry a secret.
 */
export function createIrrevocableAlerts(options: {
  url: string;
  debounceMs: number;
  brokerIssuer: string;
  logger: Logger;
}): IrrevocableAlerts {
  const { url, debounceMs, logger } = options;
  const host = new URL(url).host;
  let pending: IrrevocableLease[] = [];
  let timer: NodeJS.Timeout | null = null;
  /** Sends under way (with their retries): shutdown waits for them too. */
  const inFlight = new Set<Promise<void>>();

  async function send(batch: IrrevocableLease[]): Promise<void> {
    const body = JSON.stringify({
      event: 'tasklease.leases.irrevocable',
      broker: options.brokerIssuer,
      at: new Date().toISOString(),
      count: batch.length,
      leases: batch
        .slice(0, MAX_LISTED)
        .map((lease) => ({ ...lease, at: new Date(lease.atMs).toISOString(), atMs: undefined })),
      truncated: batch.length > MAX_LISTED,
    });
    for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
      try {
        const response = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
          redirect: 'error',
          signal: AbortSignal.timeout(TIMEOUT_MS),
        });
        if (response.ok) {
          logger.info({ host, count: batch.length }, 'irrevocable-lease alert sent');
          return;
        }
        logger.warn({ host, status: response.status, attempt }, 'irrevocable-lease alert refused');
      } catch (error) {
        logger.warn({ host, err: (error as Error).message, attempt }, 'irrevocable-lease alert failed');
      }
      if (attempt < ATTEMPTS) await new Promise((resolve) => setTimeout(resolve, 1000 * attempt));
    }
    logger.error({ host, count: batch.length }, 'irrevocable-lease alert not delivered');
  }

  async function flush(): Promise<void> {
    if (timer) clearTimeout(timer);
    timer = null;
    const batch = pending;
    pending = [];
    if (batch.length > 0) {
      const sending = send(batch).finally(() => inFlight.delete(sending));
      inFlight.add(sending);
    }
    await Promise.all(inFlight);
  }

  return {
    notify(lease) {
      pending.push(lease);
      if (timer) return;
      timer = setTimeout(() => void flush(), debounceMs);
      timer.unref();
    },
    flush,
  };
}
