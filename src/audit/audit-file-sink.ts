import type { FileHandle } from 'node:fs/promises';
import { decodeJwt } from 'jose';
import type { SealPayload } from './audit-chain';
import { lockFile, openSinkFile, type Written } from './audit-file-open';
import type { ChainHead } from './audit-file-read';
import { checkRestore, type DetectedRestore } from './audit-file-restore';
import { eventLine, restoreLine, sealLine, type ChainPoint } from './audit-lines';
import type { AuditLog, StoredSeal } from './audit-log';
import { compareStreamIds } from './stream-ids';

const SEALS_PER_PAGE = 20;

const decodeSeal = (seal: StoredSeal): SealPayload | null => {
  try {
    return decodeJwt(seal.jws) as unknown as SealPayload;
  } catch {
    return null;
  }
};

export interface SinkDeps {
  path: string;
  audit: Pick<AuditLog, 'seals' | 'entriesBetween' | 'entries' | 'newestSeal' | 'sealAtOrBefore'>;
  brokerIssuer: string;
  /** This deployment's log (the Redis prefix), which every seal names. */
  log: string;
  intervalMs: number;
  nowMs: () => number;
  onError: (error: unknown) => void;
  onWarning?: (message: string) => void;
  /**
   * Redis came back from an older snapshot: the file is ahead. Runs before the file records the restore
   * (recovering the leases it shows); when it throws, the restore is found and handled again next tick.
   */
  onRestore?: (restore: DetectedRestore) => Promise<void>;
  /** The file now durably holds the chain up to `head` (after each fdatasync). */
  onWritten?: (head: ChainPoint) => void;
}
/** Between ticks: what the file holds, and whether a seal that does not follow on has stopped the sink. */
interface SinkState {
  file: FileHandle;
  written: Written;
  headerEnd: number;
  halted: boolean;
  countReported: boolean;
}

const follows = (payload: SealPayload, head: ChainHead) =>
  payload.firstSeq === head.lastSeq + 1 && payload.prevHash === head.hash;

/**
 * A new file on a log the retention has trimmed starts at the trim's anchor: the oldest seal in Redis, whose
 * events (and every one before) are gone. The file then holds what Redis still does, from that seal on.
 */
async function isTrimAnchor(deps: SinkDeps, written: Written, seal: StoredSeal) {
  if (written.sealId !== undefined || written.head.lastSeq !== 0) return false;
  const [oldestSeal] = await deps.audit.seals(undefined, 1);
  const [oldestEvent] = await deps.audit.entries(undefined, 1);
  return oldestSeal?.id === seal.id && (!oldestEvent || compareStreamIds(oldestEvent.id, seal.id) > 0);
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
      const anchor = payload && !follows(payload, cursor.head) && (await isTrimAnchor(deps, cursor, seal));
      if (!payload || (!anchor && !follows(payload, cursor.head))) {
        broken = true;
        break;
      }
      const entries = anchor ? [] : await deps.audit.entriesBetween(payload.firstId, seal.id);
      const expected = anchor ? 0 : payload.lastSeq - payload.firstSeq + 1;
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
      const head = { lastSeq: payload.lastSeq, hash: payload.hash, log: payload.log };
      cursor = { sizeBytes: cursor.sizeBytes + batch.length, sealId: seal.id, head };
      count++;
    }
    if (count > 0) await file.datasync();
  } catch (error) {
    await file.truncate(state.written.sizeBytes).catch(() => undefined); // failing too: the next page retries
    throw error;
  }
  state.written = cursor;
  if (count > 0) deps.onWritten?.(pointOf(cursor));
  return { count, broken };
}

const pointOf = (written: Written): ChainPoint => ({
  seq: written.head.lastSeq,
  id: written.sealId ?? '',
  hash: written.head.hash,
});

/** Redis's newest seal is older than the file's last: Redis lost seals the file holds. */
async function redisIsBehind(state: SinkState, deps: SinkDeps): Promise<boolean> {
  if (state.written.sealId === undefined) return false;
  const newest = await deps.audit.newestSeal();
  return !newest || compareStreamIds(newest.id, state.written.sealId) < 0;
}

/**
 * Redis's chain stops short of the file's, or carries on from an earlier seal of it. A restore from an
 * older snapshot (checkRestore decides) is handed to `onRestore`, then recorded with a restore line, and the
 * file carries on from where Redis does; anything else is a rewrite. Resolves to whether it was a restore.
 */
async function handleGap(state: SinkState, deps: SinkDeps): Promise<boolean> {
  const check = await checkRestore(
    { file: state.file, path: deps.path, headerEnd: state.headerEnd, written: state.written },
    deps,
  );
  if (check.kind === 'rewritten') {
    state.halted = true;
    deps.onError(
      new AuditSinkStoppedError(
        `audit seals in Redis no longer follow the file's last seal (seq ${state.written.head.lastSeq}): the log in Redis was rewritten or re-sealed (${check.why}); the file sink has stopped`,
      ),
    );
    return false;
  }
  const { restore, resumeAt } = check;
  await deps.onRestore?.(restore);
  const mark = restoreLine({
    redisHead: restore.redisHead,
    fileHead: restore.fileHead,
    eventsBeyond: restore.eventsBeyond,
    detectedAt: new Date(deps.nowMs()).toISOString(),
  });
  const line = Buffer.from(`${mark}\n`);
  try {
    await state.file.truncate(state.written.sizeBytes);
    await state.file.appendFile(line);
    await state.file.datasync();
  } catch (error) {
    await state.file.truncate(state.written.sizeBytes).catch(() => undefined);
    throw error;
  }
  state.written = { sizeBytes: state.written.sizeBytes + line.length, ...resumeAt };
  return true;
}

async function catchUp(state: SinkState, deps: SinkDeps): Promise<number> {
  let count = 0;
  while (!state.halted) {
    const seals = await deps.audit.seals(state.written.sealId, SEALS_PER_PAGE);
    const page = await writePage(state, deps, seals);
    count += page.count;
    const gap = page.broken || (seals.length === 0 && (await redisIsBehind(state, deps)));
    if (gap && (await handleGap(state, deps))) continue;
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
 * last seal line. Each new seal must continue the file's chain. When Redis came back from an older snapshot
 * (its chain stops short of the file's, or goes on from an earlier seal of it), the file keeps what it has,
 * records the restore and carries on from where Redis does (`onRestore` hears of it first). Any other seal
 * that does not carry on (the log in Redis was rewritten or re-sealed) stops the sink for good, reported
 * through `onError`: a live tamper alarm.
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
  // What the file held already, as fdatasync'd before: the retention hears of it before the first write.
  if (state.written.sealId !== undefined) deps.onWritten?.(pointOf(state.written));

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
