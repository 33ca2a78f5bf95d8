import { open, readFile, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { decodeJwt } from 'jose';
import { GENESIS_CHAIN, type SealPayload } from './audit-chain';
import { eventLine, headerLine, sealLine } from './audit-lines';
import type { AuditLog, StoredSeal } from './audit-log';

/**
 * A seal line, searched for as raw bytes. Offsets are never computed from decoded text: a chunk that starts
 * inside a multi-byte character decodes to replacement characters of another length. Event JSON escapes
 * newlines, so a raw '\n' only ever ends a line (and no UTF-8 continuation byte is 0x0a).
 */
const SEAL_MARKER = Buffer.from('\n{"type":"seal"');
const CHUNK_BYTES = 1 << 20;
const HEADER_MAX_BYTES = 64 * 1024;
const SEALS_PER_PAGE = 20;

/** Where the chain stands after the file's last seal: that seal's last sequence number and chain hash. */
interface ChainHead {
  lastSeq: number;
  hash: string;
}
const genesis: ChainHead = { lastSeq: 0, hash: GENESIS_CHAIN };
/** What the file holds, fdatasync'd: its size, its last seal's id and the chain head that seal leaves. */
interface Written {
  sizeBytes: number;
  sealId: string | undefined;
  head: ChainHead;
}

/** The line starting at `offset`, without its '\n'; null when the file (or `maxBytes`) ends first. */
async function readLine(file: FileHandle, offset: number, size: number, maxBytes = Infinity) {
  const parts: Buffer[] = [];
  for (let at = offset; at < size && at - offset < maxBytes;) {
    const buffer = Buffer.alloc(Math.min(CHUNK_BYTES, size - at));
    const { bytesRead } = await file.read(buffer, 0, buffer.length, at);
    if (bytesRead === 0) break;
    const chunk = buffer.subarray(0, bytesRead);
    const newline = chunk.indexOf(0x0a);
    if (newline >= 0) return Buffer.concat([...parts, chunk.subarray(0, newline)]);
    parts.push(chunk);
    at += bytesRead;
  }
  return null;
}

function parseSealLine(line: Buffer): { sealId: string; head: ChainHead } | null {
  try {
    const value = JSON.parse(line.toString('utf8')) as { type?: unknown; id?: unknown; seal?: unknown };
    if (value.type !== 'seal' || typeof value.id !== 'string' || typeof value.seal !== 'string') return null;
    const { lastSeq, hash } = decodeJwt(value.seal) as Partial<SealPayload>;
    if (typeof lastSeq !== 'number' || !Number.isSafeInteger(lastSeq) || typeof hash !== 'string')
      return null;
    return { sealId: value.id, head: { lastSeq, hash } };
  } catch {
    return null;
  }
}

/**
 * The file's last complete seal line that parses: where it ends, its id, the chain head. A write cut short
 * leaves lines (or part of one) after it; a damaged seal line is passed over like them.
 */
async function lastSeal(file: FileHandle, size: number) {
  let upTo = size; // a marker must end at or before this offset
  while (upTo >= SEAL_MARKER.length) {
    const start = Math.max(0, upTo - CHUNK_BYTES);
    const buffer = Buffer.alloc(upTo - start);
    await file.read(buffer, 0, buffer.length, start);
    const index = buffer.lastIndexOf(SEAL_MARKER);
    if (index < 0) {
      if (start === 0) return null;
      upTo = start + SEAL_MARKER.length - 1; // a marker across the chunk boundary is found in the next chunk
      continue;
    }
    const lineStart = start + index + 1;
    const line = await readLine(file, lineStart, size);
    const seal = line && parseSealLine(line);
    if (line && seal) return { endOffset: lineStart + line.length + 1, ...seal };
    upTo = start + index + SEAL_MARKER.length - 1;
  }
  return null;
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

async function openSinkFile(
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
      const written: Written = { sizeBytes: header.length, sealId: undefined, head: genesis };
      return { file, written };
    }
    const headerEnd = await checkHeader(file, deps.path, size, deps.brokerIssuer);
    const seal = await lastSeal(file, size);
    const endOffset = seal?.endOffset ?? headerEnd;
    if (size > endOffset) {
      const tornPath = await saveTornTail(file, deps.path, endOffset, size, deps.nowMs());
      await file.truncate(endOffset);
      warn(
        `audit file ${deps.path}: ${size - endOffset} bytes after its last complete seal (a write cut short) were moved to ${tornPath}; those seals are written again whole`,
      );
    }
    const written: Written = { sizeBytes: endOffset, sealId: seal?.sealId, head: seal?.head ?? genesis };
    return { file, written };
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

const decodeSeal = (seal: StoredSeal): SealPayload | null => {
  try {
    return decodeJwt(seal.jws) as unknown as SealPayload;
  } catch {
    return null;
  }
};

interface SinkDeps {
  path: string;
  audit: Pick<AuditLog, 'seals' | 'entriesBetween'>;
  brokerIssuer: string;
  intervalMs: number;
  nowMs: () => number;
  onError: (error: unknown) => void;
  onWarning?: (message: string) => void;
}
/** Between ticks: what the file holds, and whether a seal that does not follow on has stopped the sink. */
interface SinkState {
  file: FileHandle;
  written: Written;
  halted: boolean;
  countReported: boolean;
}

/**
 * One page of seals: each checked to follow on, written with its events, then one fdatasync. Anything not
 * yet fdatasync'd is cut back off on a failure (ENOSPC, EIO, Redis), so a partial batch never stays in the
 * file for the next append to follow. Stops before a seal that does not follow on (`broken`).
 */
async function writePage(state: SinkState, deps: SinkDeps, seals: readonly StoredSeal[]) {
  const { file } = state;
  if ((await file.stat()).size !== state.written.sizeBytes) await file.truncate(state.written.sizeBytes);
  let cursor = state.written;
  let count = 0;
  let broken = false;
  try {
    for (const seal of seals) {
      const payload = decodeSeal(seal);
      if (!payload || payload.firstSeq !== cursor.head.lastSeq + 1 || payload.prevHash !== cursor.head.hash) {
        broken = true;
        break;
      }
      const entries = await deps.audit.entriesBetween(payload.firstId, seal.id);
      const expected = payload.lastSeq - payload.firstSeq + 1;
      if (entries.length !== expected && !state.countReported) {
        state.countReported = true; // verify flags it event by event; one report is the alarm
        deps.onError(
          new Error(
            `audit seal ${seal.id} covers ${expected} events but Redis returned ${entries.length}; written as they are`,
          ),
        );
      }
      const batch = Buffer.from(`${[...entries.map(eventLine), sealLine(seal)].join('\n')}\n`);
      await file.appendFile(batch);
      const head = { lastSeq: payload.lastSeq, hash: payload.hash };
      cursor = { sizeBytes: cursor.sizeBytes + batch.length, sealId: seal.id, head };
      count++;
    }
    if (count > 0) await file.datasync();
  } catch (error) {
    await file.truncate(state.written.sizeBytes).catch(() => undefined); // failing too: the next page retries
    throw error;
  }
  state.written = cursor;
  return { count, broken };
}

async function catchUp(state: SinkState, deps: SinkDeps): Promise<number> {
  let count = 0;
  while (!state.halted) {
    const seals = await deps.audit.seals(state.written.sealId, SEALS_PER_PAGE);
    const page = await writePage(state, deps, seals);
    count += page.count;
    if (page.broken) {
      state.halted = true;
      deps.onError(
        new AuditSinkStoppedError(
          `audit seals in Redis no longer follow the file's last seal (seq ${state.written.head.lastSeq}): the log in Redis was rewritten or re-sealed; the file sink has stopped`,
        ),
      );
    }
    if (seals.length < SEALS_PER_PAGE) break;
  }
  return count;
}

/** The seals in Redis stopped carrying on from the file's: a rewritten log. The sink writes nothing more. */
export class AuditSinkStoppedError extends Error {}

export interface AuditFileSink {
  /** Writes every seal not yet in the file, with its events; resolves to how many seals it wrote. */
  catchUp(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * A JSONL copy of the sealed audit log in a local file: an append-only record outside Redis, verifiable on
 * its own with `tasklease audit verify --file`. It follows the seals (never the unsealed tail), so every
 * process that has it writes the same complete file, whichever replica sealed; it resumes after its own
 * last seal line. Each new seal must continue the file's chain; one that does not (the log in Redis was
 * rewritten or re-sealed) stops the sink for good, reported through `onError`: a live tamper alarm.
 * `onWarning` hears of a torn tail saved aside at start (default: reported through `onError`).
 */
export async function startAuditFileSink(deps: SinkDeps): Promise<AuditFileSink> {
  const unlock = await lockFile(deps.path);
  const warn = deps.onWarning ?? ((message: string) => deps.onError(new Error(message)));
  const opened = await openSinkFile(deps, warn).catch(async (error: unknown) => {
    await unlock();
    throw error;
  });
  const state: SinkState = { ...opened, halted: false, countReported: false };

  let stopped = false;
  let running: Promise<unknown> = Promise.resolve();
  let timer: NodeJS.Timeout | undefined;
  const tick = () => {
    running = catchUp(state, deps)
      .catch(deps.onError)
      .finally(() => {
        if (!stopped && !state.halted) timer = setTimeout(tick, deps.intervalMs);
      });
  };
  timer = setTimeout(tick, deps.intervalMs);

  return {
    catchUp: () => catchUp(state, deps),
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
      await catchUp(state, deps).catch(deps.onError);
      await state.file.close();
      await unlock();
    },
  };
}
