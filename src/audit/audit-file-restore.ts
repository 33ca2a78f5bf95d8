import type { FileHandle } from 'node:fs/promises';
import { decodeJwt } from 'jose';
import { GENESIS_CHAIN, type SealPayload } from './audit-chain';
import { eventsIn, sealLineById, type ChainHead, type ResumePoint } from './audit-file-read';
import type { ChainPoint } from './audit-lines';
import type { AuditLog, RawAuditEntry } from './audit-log';
import { compareStreamIds } from './stream-ids';

/** Redis came back from an older snapshot: the audit file holds the chain beyond where Redis's stops. */
export interface DetectedRestore {
  /** Where Redis's chain stands: the newest seal it kept, which the file holds too (seq 0: none). */
  redisHead: ChainPoint;
  /** The file's last seal. */
  fileHead: ChainPoint;
  /** Events the file holds after `redisHead`. */
  eventsBeyond: number;
  /** Those events, in order, read afresh from the file: what Redis lost (and its snapshot's unsealed tail). */
  lostEvents(): AsyncIterable<RawAuditEntry>;
}

export type RestoreCheck =
  { kind: 'restore'; restore: DetectedRestore; resumeAt: ResumePoint } | { kind: 'rewritten'; why: string };

interface FileView {
  file: FileHandle;
  path: string;
  headerEnd: number;
  written: { sizeBytes: number; sealId: string | undefined; head: ChainHead };
}

const PAGE = 1000;
const rewritten = (why: string): RestoreCheck => ({ kind: 'rewritten', why });

/**
 * Where Redis's chain leaves the file's: the newest seal Redis holds at or before the file's last, which
 * must be in the file byte for byte and of this log; or, when Redis holds none, the chain's start.
 */
async function forkPoint(view: FileView, deps: { audit: Pick<AuditLog, 'sealAtOrBefore'>; log: string }) {
  const fileSealId = view.written.sealId as string;
  const seal = await deps.audit.sealAtOrBefore(fileSealId);
  if (!seal) {
    if (view.written.head.log !== deps.log) return `the file's seals are of log "${view.written.head.log}"`;
    return { head: { seq: 0, id: '', hash: GENESIS_CHAIN }, fromOffset: view.headerEnd };
  }
  if (seal.id === fileSealId)
    return `Redis holds the file's last seal ${seal.id}, yet a seal after it does not follow it`;
  const line = await sealLineById(view.file, view.written.sizeBytes, seal.id);
  if (!line || line.value.jws !== seal.jws) return `Redis's seal ${seal.id} is not the one the file holds`;
  const payload = decodeJwt(seal.jws) as unknown as SealPayload;
  if (payload.log !== deps.log) return `Redis's seal ${seal.id} is of log "${payload.log}"`;
  return { head: { seq: payload.lastSeq, id: seal.id, hash: payload.hash }, fromOffset: line.endOffset };
}

/**
 * Do the events Redis holds after the fork point, up to the file's last seal (a snapshot's unsealed tail),
 * open the file's events after it, as stored, in order? Counts the file's events after the fork point.
 */
async function tailMatches(
  view: FileView,
  audit: Pick<AuditLog, 'entries'>,
  fork: { head: ChainPoint; fromOffset: number },
): Promise<{ matches: boolean; eventsBeyond: number }> {
  const fileEvents = eventsIn(view.path, fork.fromOffset, view.written.sizeBytes);
  let eventsBeyond = 0;
  let afterId: string | undefined = fork.head.id || undefined;
  let comparing = true;
  while (comparing) {
    const page = await audit.entries(afterId, PAGE);
    for (const entry of page) {
      if (compareStreamIds(entry.id, view.written.sealId as string) > 0) break;
      const next = await fileEvents.next();
      if (next.done || next.value.id !== entry.id || next.value.json !== entry.json) {
        await fileEvents.return(undefined);
        return { matches: false, eventsBeyond };
      }
      eventsBeyond++;
    }
    const last = page[page.length - 1];
    comparing =
      page.length === PAGE && !!last && compareStreamIds(last.id, view.written.sealId as string) <= 0;
    afterId = last?.id;
  }
  for await (const entry of fileEvents) if (entry) eventsBeyond++;
  return { matches: true, eventsBeyond };
}

/**
 * Called when Redis's chain stops short of the file's, or carries on from an earlier seal of it. A restore
 * of an older snapshot looks like this: Redis holds a seal the file holds too (or none at all), nothing
 * sealed after it, and the events after it that Redis holds are the first the file holds after it, exactly.
 * Anything else is a rewrite. (Deleting the newest seals together with their events looks the same: the
 * sink cannot tell that from a restore, and reports it as one; the file keeps what was deleted.)
 */
export async function checkRestore(
  view: FileView,
  deps: { audit: Pick<AuditLog, 'sealAtOrBefore' | 'entries'>; log: string },
): Promise<RestoreCheck> {
  if (view.written.sealId === undefined) return rewritten('the file holds no seal yet');
  const fork = await forkPoint(view, deps);
  if (typeof fork === 'string') return rewritten(fork);
  const { matches, eventsBeyond } = await tailMatches(view, deps.audit, fork);
  if (!matches)
    return rewritten(`the events Redis holds after seal ${fork.head.id || '(none)'} are not the file's`);
  const { written } = view;
  return {
    kind: 'restore',
    restore: {
      redisHead: fork.head,
      fileHead: { seq: written.head.lastSeq, id: written.sealId as string, hash: written.head.hash },
      eventsBeyond,
      lostEvents: () => eventsIn(view.path, fork.fromOffset, written.sizeBytes),
    },
    resumeAt: {
      sealId: fork.head.id || undefined,
      head: { lastSeq: fork.head.seq, hash: fork.head.hash, log: deps.log },
    },
  };
}
