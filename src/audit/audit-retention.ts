import { decodeJwt } from 'jose';
import type { RedisClient } from '../redis/connection';
import type { RedisKeys } from '../redis/keys';
import type { SealPayload } from './audit-chain';
import { pointDetail } from './audit-gaps';
import type { ChainPoint } from './audit-lines';
import { serializeAuditEvent, type AuditLog } from './audit-log';
import { compareStreamIds } from './stream-ids';

/** Where one audit file stands, as recorded in `<p>audit-copies`. */
interface CopyRecord {
  name: string;
  sealId: string;
  atMs: number;
}

export interface TrimReport {
  anchor: ChainPoint;
  events: number;
  seals: number;
  keptIn: string;
}

export interface AuditRetention {
  /** This worker's file now durably holds the chain up to `head`. */
  recordCopy(head: ChainPoint): Promise<void>;
  /** Trims what may be trimmed now; null when nothing was. */
  trimNow(): Promise<TrimReport | null>;
  stop(): Promise<void>;
}

const MAX_STREAM_SEQ = '18446744073709551615';

/** The stream id right after `id`: XTRIM MINID keeps ids from it on. */
function nextStreamId(id: string): string {
  const [ms, seq] = id.split('-');
  return `${ms}-${(BigInt(seq ?? '0') + 1n).toString()}`;
}

function parseCopies(hash: Record<string, string>): CopyRecord[] {
  return Object.entries(hash).flatMap(([name, json]) => {
    try {
      const value = JSON.parse(json) as Partial<CopyRecord>;
      return typeof value.sealId === 'string' && typeof value.atMs === 'number'
        ? [{ name, sealId: value.sealId, atMs: value.atMs }]
        : [];
    } catch {
      return [];
    }
  });
}

/**
 * The audit stream's retention (`audit.retentionSeconds`), run by each worker that keeps an audit file.
 * Trims the stream in Redis up to an anchor seal, and only when every one of these holds:
 * - every event trimmed is older than the retention, and sealed: the anchor is a seal, and its last event
 *   (its id) is older than the retention;
 * - every audit file holds it durably: each worker records in `<p>audit-copies` how far its file has
 *   fdatasync'd the chain (after each write, and again every tick while it runs), and the anchor is at or
 *   before the least of them. A file not heard of for the
 *   retention period no longer holds trimming back (its worker is gone; one that comes back later finds
 *   a gap, reported by its sink);
 * - no file at all: nothing is trimmed.
 * The anchor seal stays in Redis (its events, and every event and seal before it, go), so what remains is
 * verifiable on its own: the next seal chains from it. An `audit.trimmed` event naming the anchor goes in
 * the same MULTI, so `audit verify` can tell the trim from a log cut at its start.
 */
export function startAuditRetention(deps: {
  redis: RedisClient;
  keys: RedisKeys;
  audit: Pick<AuditLog, 'sealAtOrBefore' | 'entries'>;
  /** This file's name among the copies: `<host>:<path>`. */
  copyName: string;
  retentionSeconds: number | undefined;
  intervalMs: number;
  nowMs: () => number;
  onTrimmed: (report: TrimReport) => void;
  onError: (error: unknown) => void;
}): AuditRetention {
  const { redis, keys, audit } = deps;
  /** This file's head, re-recorded every tick: a worker alive is heard of even when nothing is sealed. */
  let copied: ChainPoint | null = null;

  async function recordCopy(head: ChainPoint) {
    if (!head.id) return;
    copied = head;
    const record = JSON.stringify({ sealId: head.id, seq: head.seq, atMs: deps.nowMs() });
    await redis.hset(keys.auditCopies(), deps.copyName, record);
  }

  /** The newest seal every live copy holds whose events are all older than the retention, if any. */
  async function anchorSeal(retentionSeconds: number, nowMs: number) {
    const cutoffMs = nowMs - retentionSeconds * 1000;
    const copies = parseCopies(await redis.hgetall(keys.auditCopies())).filter(
      (copy) => copy.atMs >= cutoffMs,
    );
    if (copies.length === 0) return null;
    const bounds = [...copies.map((copy) => copy.sealId), `${Math.max(0, cutoffMs - 1)}-${MAX_STREAM_SEQ}`];
    const bound = bounds.reduce((least, id) => (compareStreamIds(id, least) < 0 ? id : least));
    const seal = await audit.sealAtOrBefore(bound);
    const [oldest] = await audit.entries(undefined, 1);
    // Nothing left at or before it: trimmed to it already.
    if (!seal || !oldest || compareStreamIds(oldest.id, seal.id) > 0) return null;
    return { seal, keptIn: copies.map((copy) => copy.name).join(', ') };
  }

  async function trimNow(): Promise<TrimReport | null> {
    const { retentionSeconds } = deps;
    if (retentionSeconds === undefined) return null;
    if (copied) await recordCopy(copied);
    const nowMs = deps.nowMs();
    const found = await anchorSeal(retentionSeconds, nowMs);
    if (!found) return null;
    const payload = decodeJwt(found.seal.jws) as unknown as SealPayload;
    const anchor = { seq: payload.lastSeq, id: found.seal.id, hash: payload.hash };
    const record = serializeAuditEvent({
      type: 'audit.trimmed',
      atMs: nowMs,
      actor: 'worker',
      reason: `events older than ${retentionSeconds} s, sealed and held by every audit file, trimmed from Redis`,
      detail: { ...pointDetail('anchor', anchor), retentionSeconds, keptIn: found.keptIn },
    });
    const replies = await redis
      .multi()
      .xadd(keys.audit(), '*', 'event', record)
      .xtrim(keys.audit(), 'MINID', nextStreamId(anchor.id))
      .xtrim(keys.auditSeals(), 'MINID', anchor.id)
      .exec();
    const failed = replies?.find(([error]) => error);
    if (!replies || failed) throw failed?.[0] ?? new Error('the trim was not executed');
    const report = {
      anchor,
      events: Number(replies[1]?.[1] ?? 0),
      seals: Number(replies[2]?.[1] ?? 0),
      keptIn: found.keptIn,
    };
    deps.onTrimmed(report);
    return report;
  }

  let stopped = false;
  let running: Promise<unknown> = Promise.resolve();
  let timer: NodeJS.Timeout | undefined;
  const tick = () => {
    running = trimNow()
      .catch(deps.onError)
      .finally(() => {
        if (!stopped) timer = setTimeout(tick, deps.intervalMs);
      });
  };
  if (deps.retentionSeconds !== undefined) timer = setTimeout(tick, deps.intervalMs);

  return {
    recordCopy,
    trimNow,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
