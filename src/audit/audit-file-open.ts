import { open, readFile, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { CHUNK_BYTES, GENESIS_HEAD, lastResumeLine, readLine, type ChainHead } from './audit-file-read';
import { headerLine } from './audit-lines';

/** Opening the audit file the sink keeps (audit-file-sink.ts): one writer, its own file, a torn tail saved. */

const HEADER_MAX_BYTES = 64 * 1024;

/** What the file holds, fdatasync'd: its size, its last seal's id and the chain head that seal leaves. */
export interface Written {
  sizeBytes: number;
  sealId: string | undefined;
  head: ChainHead;
}

/**
 * Fails closed: the sink cuts off what follows its last seal, so it only ever writes to a file it started —
 * never to a foreign file, an export of some events, or another broker's copy. Returns where the header ends.
 */
async function checkHeader(file: FileHandle, path: string, size: number, brokerIssuer: string) {
  const line = await readLine(file, 0, size, HEADER_MAX_BYTES);
  let value: unknown = null;
  try {
    value = line ? JSON.parse(line.toString('utf8')) : null;
  } catch {
    // not JSON: refused below
  }
  const header = (typeof value === 'object' && value ? value : {}) as Record<string, unknown>;
  const problem = !line
    ? 'it has no complete first line'
    : header.type !== 'header' || header.format !== 'tasklease-audit'
      ? 'its first line is not a tasklease audit header'
      : header.filter !== undefined
        ? 'it is an export of some events (its header has a filter)'
        : header.broker !== brokerIssuer
          ? `its header names broker ${JSON.stringify(header.broker)}, not ${JSON.stringify(brokerIssuer)}`
          : null;
  if (!line || problem)
    throw new Error(
      `audit file ${path} is not this broker's audit file (${problem}); the file sink writes only to a new file or one it started: move it away or set audit.file to another path`,
    );
  return line.length + 1;
}

/** Copies bytes [from, size) to `<path>.torn-<time>` before they are cut off: nothing is deleted unseen. */
async function saveTornTail(file: FileHandle, path: string, from: number, size: number, nowMs: number) {
  const tornPath = `${path}.torn-${new Date(nowMs).toISOString().replace(/[:.]/g, '-')}`;
  const out = await open(tornPath, 'wx', 0o640);
  try {
    for (let at = from; at < size; at += CHUNK_BYTES) {
      const buffer = Buffer.alloc(Math.min(CHUNK_BYTES, size - at));
      const { bytesRead } = await file.read(buffer, 0, buffer.length, at);
      await out.write(buffer, 0, bytesRead);
    }
    await out.datasync();
  } finally {
    await out.close();
  }
  return tornPath;
}

export async function openSinkFile(
  deps: { path: string; brokerIssuer: string; nowMs: () => number },
  warn: (message: string) => void,
) {
  const file = await open(deps.path, 'a+', 0o640);
  try {
    const { size } = await file.stat();
    if (size === 0) {
      const createdAt = new Date(deps.nowMs()).toISOString();
      const header = Buffer.from(`${headerLine({ broker: deps.brokerIssuer, createdAt })}\n`);
      await file.appendFile(header);
      await file.datasync();
      const written: Written = { sizeBytes: header.length, sealId: undefined, head: GENESIS_HEAD };
      return { file, written, headerEnd: header.length };
    }
    const headerEnd = await checkHeader(file, deps.path, size, deps.brokerIssuer);
    const resume = await lastResumeLine(file, size);
    const endOffset = resume?.endOffset ?? headerEnd;
    if (size > endOffset) {
      const tornPath = await saveTornTail(file, deps.path, endOffset, size, deps.nowMs());
      await file.truncate(endOffset);
      warn(
        `audit file ${deps.path}: ${size - endOffset} bytes after its last complete seal (a write cut short) were moved to ${tornPath}; those seals are written again whole`,
      );
    }
    const written: Written = {
      sizeBytes: endOffset,
      sealId: resume?.value.sealId,
      head: resume?.value.head ?? GENESIS_HEAD,
    };
    return { file, written, headerEnd };
  } catch (error) {
    await file.close();
    throw error;
  }
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
 * the writer's pid; a lock whose process is gone (a crash) is taken over. It only guards processes on one
 * host (one container) that share this filesystem view: a pid means nothing elsewhere, so two hosts or
 * containers writing one file over a shared volume are not kept apart — give each its own file.
 */
export async function lockFile(path: string): Promise<() => Promise<void>> {
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
