import type { Logger } from './logger';

export interface Webhook {
  /** POSTs `body` as JSON now, in the background, with retries; `logContext` goes with its log lines. */
  post(body: object, logContext?: Record<string, unknown>): void;
  /** Resolves once every POST under way (with its retries) has finished: shutdown waits for them. */
  settled(): Promise<void>;
}

const ATTEMPTS = 3;
const TIMEOUT_MS = 5_000;
const RETRY_DELAY_MS = 1_000;

/**
 * One outbound webhook, best effort: each POST is tried three times (5 s each, 1 s then 2 s apart), then
 * logged as not delivered and reported to `onUndelivered` (a metric). The URL is never logged (webhook URLs
 * often carry a secret): its host is. Redirects are refused, so a body never goes somewhere not configured.
 */
export function createWebhook(options: {
  url: string;
  /** For logs and metrics: `irrevocable-lease alert`, `approval request`. */
  name: string;
  logger: Logger;
  onUndelivered?: () => void;
}): Webhook {
  const { url, name, logger } = options;
  const host = new URL(url).host;
  const inFlight = new Set<Promise<void>>();

  async function deliver(body: string, context: Record<string, unknown>): Promise<void> {
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
          logger.info({ host, ...context }, `${name} sent`);
          return;
        }
        logger.warn({ host, status: response.status, attempt, ...context }, `${name} refused`);
      } catch (error) {
        logger.warn({ host, err: (error as Error).message, attempt, ...context }, `${name} failed`);
      }
      if (attempt < ATTEMPTS) await new Promise((resolve) => setTimeout(resolve, RETRY_DELAY_MS * attempt));
    }
    logger.error({ host, ...context }, `${name} not delivered`);
    options.onUndelivered?.();
  }

  return {
    post(body, logContext = {}) {
      const sending = deliver(JSON.stringify(body), logContext).finally(() => inFlight.delete(sending));
      inFlight.add(sending);
    },
    async settled() {
      await Promise.all(inFlight);
    },
  };
}
