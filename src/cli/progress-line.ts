/** Where progress goes: stderr, or a stand-in in tests. */
export interface ProgressStream {
  isTTY?: boolean;
  write(text: string): unknown;
}

export interface ProgressLine {
  update(text: string): void;
  /** The last state, always shown; on a terminal the line is then ended. */
  done(text: string): void;
}

/** On a terminal, `\r` back to the line's start and `ESC [K` to erase what the previous text left. */
const REWRITE = '\r';
const ERASE_TO_END = '\x1b[K';

/**
 * One progress line: on a terminal rewritten in place; anywhere else (a log, a pipe, CI) a plain line, no
 * control characters, at most one every `intervalMs`, so a long wait does not flood a log.
 */
export function createProgressLine(
  stream: ProgressStream,
  options: { intervalMs?: number; nowMs?: () => number } = {},
): ProgressLine {
  const intervalMs = options.intervalMs ?? 2000;
  const nowMs = options.nowMs ?? Date.now;
  let lastPlainMs = -Infinity;
  return {
    update(text) {
      if (stream.isTTY) {
        stream.write(`${REWRITE}${text}${ERASE_TO_END}`);
        return;
      }
      if (nowMs() - lastPlainMs < intervalMs) return;
      lastPlainMs = nowMs();
      stream.write(`${text}\n`);
    },
    done(text) {
      stream.write(stream.isTTY ? `${REWRITE}${text}${ERASE_TO_END}\n` : `${text}\n`);
    },
  };
}
