import { open, readFile, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { decodeJwt } from 'jose';
import type { SealPayload } from './audit-chain';
import { eventLine, headerLine, sealLine } from './audit-lines';
import type { AuditLog } from './audit-log';

const SEAL_PREFIX = '{"type":"seal"';
const CHUNK_BYTES = 1 << 20;

/**
 * Where the file's last complete seal ends, and that seal's id. A write cut short (a crash between the
 * events and their seal) leaves lines after it; they are cut off and written again whole.
 */
async function lastSeal(file: FileHandle): Promise<{ endOffset: number; sealId: string | null }> {
  const { size } = await file.stat();
  let tail = '';
  for (let end = size; end > 0; end -= CHUNK_BYTES) {
    const start = Math.max(0, end - CHUNK_BYTES);
    const buffer = Buffer.alloc(end - start);
    await file.read(buffer, 0, buffer.length, start);
    tail = buffer.toString('utf8') + tail;
    const lines = tail.split('\n');
    for (let index = lines.length - 2; index >= (start === 0 ? 0 : 1); index--) {
      const line = lines[index] as string;
      if (!line.startsWith(SEAL_PREFIX)) continue;
      const endOffset = start + Buffer.byteLength(lines.slice(0, index + 1).join('\n')) + 1;
      return { endOffset, sealId: (JSON.parse(line) as { id: string }).id };
    }
  }
  // No seal yet: keep a header line if there is one, nothing else.
  const firstLine = tail.split('\n')[0] ?? '';
  return {
    endOffset:
      firstLine.startsWith('{"type":"header"') && tail.includes('\n') ? Buffer.byteLength(firstLine) + 1 : 0,
    sealId: null,
  };
}

const isRunning = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/**
 * One writer per file: two processes appending the same batches would interleave them. `<file>.lock` holds
 * the writer's pid; a lock whose process is gone (a crash) is taken over.
 */
async function lockFile(path: string): Promise<() => Promise<void>> {
  const lockPath = `${path}.lock`;
  try {
    await writeFile(lockPath, String(process.pid), { flag: 'wx' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    const holder = Number(await readFile(lockPath, 'utf8').catch(() => ''));
    if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && isRunning(holder))
      throw new Error(`audit file ${path} is being written by process ${holder} (${lockPath})`);
    await writeFile(lockPath, String(process.pid));
  }
  return () => unlink(lockPath).catch(() => undefined);
}

export interface AuditFileSink {
  /** Writes every seal not yet in the file, with its events; resolves to how many seals it wrote. */
  catchUp(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * A JSONL copy of the sealed audit log in a local file: an append-only record outside Redis, verifiable on
 * its own with `tasklease audit verify --file`. It follows the seals (never the unsealed tail), so every
 * process that has it writes the same complete file, whichever replica sealed; it resumes after its own
 * last seal line.
 */
export async function startAuditFileSink(deps: {
  path: string;
  audit: Pick<AuditLog, 'seals' | 'entriesBetween'>;
  brokerIssuer: string;
  intervalMs: number;
  nowMs: () => number;
  onError: (error: unknown) => void;
}): Promise<AuditFileSink> {
  const unlock = await lockFile(deps.path);
  const file = await open(deps.path, 'a+', 0o640);
  const position = await lastSeal(file);
  if ((await file.stat()).size !== position.endOffset) await file.truncate(position.endOffset);
  if (position.endOffset === 0) {
    const header = headerLine({ broker: deps.brokerIssuer, createdAt: new Date(deps.nowMs()).toISOString() });
    await file.appendFile(`${header}\n`);
  }
  let lastSealId = position.sealId ?? undefined;

  async function catchUp(): Promise<number> {
    let written = 0;
    for (;;) {
      const seals = await deps.audit.seals(lastSealId, 20);
      for (const seal of seals) {
        const { firstId } = decodeJwt(seal.jws) as unknown as SealPayload;
        const entries = await deps.audit.entriesBetween(firstId, seal.id);
        // One write per seal, its events then the seal: a crash leaves at most one partial batch to redo.
        await file.appendFile(`${[...entries.map(eventLine), sealLine(seal)].join('\n')}\n`);
        lastSealId = seal.id;
        written++;
      }
      if (seals.length > 0) await file.datasync();
      if (seals.length < 20) return written;
    }
  }

  let stopped = false;
  let running: Promise<unknown> = Promise.resolve();
  let timer: NodeJS.Timeout | undefined;
  const tick = () => {
    running = catchUp()
      .catch(deps.onError)
      .finally(() => {
        if (!stopped) timer = setTimeout(tick, deps.intervalMs);
      });
  };
  timer = setTimeout(tick, deps.intervalMs);

  return {
    catchUp,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
      await catchUp().catch(deps.onError);
      await file.close();
      await unlock();
    },
  };
}
