import type { RawAuditEntry, StoredSeal } from './audit-log';
import { compareStreamIds } from './stream-ids';

/**
 * The JSONL form of the audit log, shared by the file sink, `tasklease audit export` and `audit verify`:
 * a header line, then events in stream order, each seal after the last event it covers.
 */
export interface AuditHeader {
  type: 'header';
  format: 'tasklease-audit';
  version: 1;
  broker: string;
  createdAt: string;
  /** An export of some events only (a task's, a lease's): verified event by event, not as a chain. */
  filter?: Record<string, string>;
}

export const headerLine = (header: Omit<AuditHeader, 'type' | 'format' | 'version'>): string =>
  JSON.stringify({ type: 'header', format: 'tasklease-audit', version: 1, ...header });

/** The event as an object, for people and jq; verifiers hash `JSON.stringify(event)`, its stored form. */
export const eventLine = (entry: RawAuditEntry): string =>
  JSON.stringify({ type: 'event', id: entry.id, event: JSON.parse(entry.json) as unknown });

export const sealLine = (seal: StoredSeal): string =>
  JSON.stringify({ type: 'seal', id: seal.id, seal: seal.jws });

/** A point on the chain: a seal's last sequence number, its id and the chain hash there (seq 0: genesis). */
export interface ChainPoint {
  seq: number;
  id: string;
  hash: string;
}

/**
 * Written by the file sink when Redis came back from an older snapshot: the file had gone on to `fileHead`,
 * Redis's chain now carries on from `redisHead` (a seal earlier in the file, or genesis). The seals after
 * this line follow `redisHead`; the events between the two heads stay in the file, sealed as they were.
 */
export interface RestoreMark {
  redisHead: ChainPoint;
  fileHead: ChainPoint;
  /** Events the file held beyond `redisHead` when the restore was found. */
  eventsBeyond: number;
  detectedAt: string;
}

export const restoreLine = (mark: RestoreMark): string => JSON.stringify({ type: 'restore', ...mark });

const isChainPoint = (value: unknown): value is ChainPoint => {
  const point = value as Partial<ChainPoint> | null;
  return (
    typeof point === 'object' &&
    point !== null &&
    Number.isSafeInteger(point.seq) &&
    typeof point.id === 'string' &&
    typeof point.hash === 'string'
  );
};

/** A restore line as the sink writes it, or null. */
export function parseRestoreLine(line: string): RestoreMark | null {
  let value: Partial<RestoreMark> & { type?: unknown };
  try {
    value = JSON.parse(line) as typeof value;
  } catch {
    return null;
  }
  if (value?.type !== 'restore' || !isChainPoint(value.redisHead) || !isChainPoint(value.fileHead))
    return null;
  if (!Number.isSafeInteger(value.eventsBeyond) || typeof value.detectedAt !== 'string') return null;
  const point = ({ seq, id, hash }: ChainPoint): ChainPoint => ({ seq, id, hash });
  const mark: RestoreMark = {
    redisHead: point(value.redisHead),
    fileHead: point(value.fileHead),
    eventsBeyond: value.eventsBeyond as number,
    detectedAt: value.detectedAt,
  };
  // Byte for byte as written: a hand-edited line is not taken for the sink's.
  return restoreLine(mark) === line ? mark : null;
}

/** Events and seals interleaved in stream order, each seal after the events it covers. */
export function auditLines(entries: readonly RawAuditEntry[], seals: readonly StoredSeal[]): string[] {
  const lines: string[] = [];
  let sealIndex = 0;
  for (const entry of entries) {
    while (sealIndex < seals.length && compareStreamIds((seals[sealIndex] as StoredSeal).id, entry.id) < 0)
      lines.push(sealLine(seals[sealIndex++] as StoredSeal));
    lines.push(eventLine(entry));
  }
  while (sealIndex < seals.length) lines.push(sealLine(seals[sealIndex++] as StoredSeal));
  return lines;
}

/** A restore line where it stood: after this many events and seals of the file. */
export interface PlacedRestore extends RestoreMark {
  entriesBefore: number;
  sealsBefore: number;
}

export interface ParsedAuditFile {
  header: AuditHeader | null;
  entries: RawAuditEntry[];
  seals: StoredSeal[];
  restores: PlacedRestore[];
}

/**
 * Reads JSONL back; a line that is not one of ours is an error naming its line number. An event line must be
 * byte for byte what the broker writes for the event it holds: otherwise a line with, say, a duplicate key
 * would verify while a reader (or grep) sees the other value.
 */
export function parseAuditLines(text: string): ParsedAuditFile {
  const out: ParsedAuditFile = { header: null, entries: [], seals: [], restores: [] };
  text.split('\n').forEach((line, index) => {
    if (line.trim() === '') return;
    let value: { type?: string; id?: unknown; event?: unknown; seal?: unknown } | null;
    try {
      value = JSON.parse(line) as typeof value;
    } catch {
      throw new Error(`line ${index + 1} is not JSON`);
    }
    if (value?.type === 'header' && index === 0) out.header = value as unknown as AuditHeader;
    else if (value?.type === 'event' && typeof value.id === 'string' && value.event !== undefined) {
      const entry = { id: value.id, json: JSON.stringify(value.event) };
      if (eventLine(entry) !== line)
        throw new Error(`line ${index + 1} is not written as the broker writes events (edited by hand?)`);
      out.entries.push(entry);
    } else if (value?.type === 'seal' && typeof value.id === 'string' && typeof value.seal === 'string')
      out.seals.push({ id: value.id, jws: value.seal });
    else if (value?.type === 'restore') {
      const mark = parseRestoreLine(line);
      if (!mark) throw new Error(`line ${index + 1} is not a restore line as the audit file sink writes it`);
      out.restores.push({ ...mark, entriesBefore: out.entries.length, sealsBefore: out.seals.length });
    } else throw new Error(`line ${index + 1} is not an audit header, event, seal or restore line`);
  });
  return out;
}
