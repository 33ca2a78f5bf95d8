import type { Logger } from './logger';

/**
 * A warning that may repeat fast (a BullMQ worker meeting a Redis error on each of its fetchers): logged at
 * once, then at most once per `intervalMs`, with how many were left out since.
 */
export function throttledWarning(logger: Logger, message: string, intervalMs = 5_000) {
  let lastMs = -Infinity;
  let suppressed = 0;
  return (fields: Record<string, unknown>) => {
    const nowMs = Date.now();
    if (nowMs - lastMs < intervalMs) {
      suppressed++;
      return;
    }
    logger.warn({ ...fields, ...(suppressed > 0 ? { suppressed } : {}) }, message);
    lastMs = nowMs;
    suppressed = 0;
  };
}
