/**
 * A process cannot start (Redis unreachable or unusable, a file it must own is held): the message names the
 * address or the file. The command exits non-zero with it; nothing is left half-started.
 */
export class StartupError extends Error {
  override name = 'StartupError';
}
