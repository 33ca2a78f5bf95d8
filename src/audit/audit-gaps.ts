import type { AuditEvent, RawAuditEntry, StoredSeal } from './audit-log';
import { compareStreamIds } from './stream-ids';
import type { ChainPoint } from './audit-lines';

/**
 * The two ways the log in Redis legitimately holds less than the whole chain, and the events that say so:
 * - `audit.restored`: Redis came back from an older snapshot; the worker's audit file holds the events
 *   between Redis's head then and the file's (written by the file sink, audit-file-restore.ts);
 * - `audit.trimmed`: the retention trimmed the events up to an anchor seal, which stays in Redis; every
 *   trimmed event was sealed and copied to the audit files first (audit-retention.ts).
 * Both are ordinary audit events, so they are sealed with the rest and copied to the files.
 */

export interface RestoreNotice {
  redisHead: ChainPoint;
  fileHead: ChainPoint;
  eventsBeyond: number;
  detectedAt: string;
  /** Where the verifier learnt of it: a file's restore line, or the `audit.restored` event. */
  recordedIn: 'file' | 'log';
  /** The audit file that holds the events Redis lacks (from the event). */
  file?: string;
}

export interface TrimNotice {
  /** The seal the remaining log is chained from; its events and every one before were trimmed. */
  anchor: ChainPoint;
  trimmedAt: string;
  /** The audit files that held the trimmed events (host:path). */
  keptIn: string;
}

const point = (detail: AuditEvent['detail'], prefix: string): ChainPoint | null => {
  const seq = detail?.[`${prefix}Seq`];
  const id = detail?.[`${prefix}Id`];
  const hash = detail?.[`${prefix}Hash`];
  return typeof seq === 'number' && typeof id === 'string' && typeof hash === 'string'
    ? { seq, id, hash }
    : null;
};

export const pointDetail = (prefix: string, at: ChainPoint) => ({
  [`${prefix}Seq`]: at.seq,
  [`${prefix}Id`]: at.id,
  [`${prefix}Hash`]: at.hash,
});

/** Events of one type, parsed; a substring test spares parsing the rest of a large log. */
function eventsOfType(entries: readonly RawAuditEntry[], type: AuditEvent['type']) {
  const marker = `"type":${JSON.stringify(type)}`;
  return entries
    .filter((entry) => entry.json.includes(marker))
    .map((entry) => ({ id: entry.id, event: JSON.parse(entry.json) as AuditEvent }))
    .filter(({ event }) => event.type === type);
}

/** Every `audit.restored` event, as a notice. */
export function restoresRecorded(entries: readonly RawAuditEntry[]): RestoreNotice[] {
  return eventsOfType(entries, 'audit.restored').flatMap(({ event }) => {
    const redisHead = point(event.detail, 'redisHead');
    const fileHead = point(event.detail, 'fileHead');
    if (!redisHead || !fileHead) return [];
    const file = event.detail?.file;
    return [
      {
        redisHead,
        fileHead,
        eventsBeyond: Number(event.detail?.eventsBeyond ?? fileHead.seq - redisHead.seq),
        detectedAt: new Date(event.atMs).toISOString(),
        recordedIn: 'log' as const,
        ...(typeof file === 'string' ? { file } : {}),
      },
    ];
  });
}

/** The trim that made `anchor` the first seal, if an `audit.trimmed` event names it exactly. */
export function trimOf(entries: readonly RawAuditEntry[], anchor: ChainPoint): TrimNotice | null {
  for (const { event } of eventsOfType(entries, 'audit.trimmed').reverse()) {
    const named = point(event.detail, 'anchor');
    if (named && named.id === anchor.id && named.seq === anchor.seq && named.hash === anchor.hash)
      return {
        anchor,
        trimmedAt: new Date(event.atMs).toISOString(),
        keptIn: String(event.detail?.keptIn ?? ''),
      };
  }
  return null;
}

/**
 * A live log read while the retention trims it: the pages read first may hold events and seals a trim
 * removed before the last page was read. What is at or before the newest trim's anchor (named by its
 * `audit.trimmed` event, the anchor seal among those read) is left out, as Redis no longer holds it: the
 * rest is what one consistent read would have returned. Only for a log read from Redis, never a file (a
 * file keeps everything, and all of it is checked).
 */
export function fromNewestTrim(entries: readonly RawAuditEntry[], seals: readonly StoredSeal[]) {
  const anchors = eventsOfType(entries, 'audit.trimmed')
    .map(({ event }) => point(event.detail, 'anchor'))
    .filter((anchor): anchor is ChainPoint => anchor !== null && seals.some((seal) => seal.id === anchor.id));
  const newest = anchors.reduce<ChainPoint | null>(
    (latest, anchor) => (!latest || compareStreamIds(anchor.id, latest.id) > 0 ? anchor : latest),
    null,
  );
  if (!newest) return { entries, seals };
  return {
    entries: entries.filter((entry) => compareStreamIds(entry.id, newest.id) > 0),
    seals: seals.filter((seal) => compareStreamIds(seal.id, newest.id) >= 0),
  };
}
