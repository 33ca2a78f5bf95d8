import { createReadStream } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { decodeJwt } from 'jose';
import { GENESIS_CHAIN, type SealPayload } from './audit-chain';
import { parseRestoreLine } from './audit-lines';
import type { RawAuditEntry } from './audit-log';

/**
 * Reading the audit file the sink keeps (audit-file-sink.ts). Lines are searched for as raw bytes; offsets
 * are never computed from decoded text: a chunk that starts inside a multi-byte character decodes to
 * replacement characters of another length. Event JSON escapes newlines, so a raw '\n' only ever ends a line
 * (and no UTF-8 continuation byte is 0x0a).
 */

export const CHUNK_BYTES = 1 << 20;
const SEAL_MARKER = Buffer.from('\n{"type":"seal"');
const RESTORE_MARKER = Buffer.from('\n{"type":"restore"');

/** Where the chain stands after a seal line: that seal's last sequence number and chain hash, and its log. */
export interface ChainHead {
  lastSeq: number;
  hash: string;
  log?: string;
}
export const GENESIS_HEAD: ChainHead = { lastSeq: 0, hash: GENESIS_CHAIN };

/** A line the sink may carry on after: the seal's id (none: genesis) and the chain head it leaves. */
export interface ResumePoint {
  sealId: string | undefined;
  head: ChainHead;
}

/** The line starting at `offset`, without its '\n'; null when the file (or `maxBytes`) ends first. */
export async function readLine(file: FileHandle, offset: number, size: number, maxBytes = Infinity) {
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

export function parseSealLine(line: Buffer): ResumePoint | null {
  try {
    const value = JSON.parse(line.toString('utf8')) as { type?: unknown; id?: unknown; seal?: unknown };
    if (value.type !== 'seal' || typeof value.id !== 'string' || typeof value.seal !== 'string') return null;
    const { lastSeq, hash, log } = decodeJwt(value.seal) as Partial<SealPayload>;
    if (typeof lastSeq !== 'number' || !Number.isSafeInteger(lastSeq) || typeof hash !== 'string')
      return null;
    return { sealId: value.id, head: { lastSeq, hash, ...(typeof log === 'string' ? { log } : {}) } };
  } catch {
    return null;
  }
}

/** A seal line, or a restore line: after it the chain goes on from the earlier head it names. */
function parseResumeLine(line: Buffer): ResumePoint | null {
  const seal = parseSealLine(line);
  if (seal) return seal;
  const restore = parseRestoreLine(line.toString('utf8'));
  if (!restore) return null;
  const { redisHead } = restore;
  return { sealId: redisHead.id || undefined, head: { lastSeq: redisHead.seq, hash: redisHead.hash } };
}

/**
 * The last complete line, searching backwards, that starts with one of `markers` (each beginning with the
 * '\n' before the line) and that `parse` takes; lines it does not take (damaged) are passed over.
 */
async function findLineBackwards<T>(
  file: FileHandle,
  size: number,
  markers: readonly Buffer[],
  parse: (line: Buffer) => T | null,
) {
  const longest = Math.max(...markers.map((marker) => marker.length));
  let upTo = size; // a marker must end at or before this offset
  while (upTo > 0) {
    const start = Math.max(0, upTo - CHUNK_BYTES);
    const buffer = Buffer.alloc(upTo - start);
    await file.read(buffer, 0, buffer.length, start);
    const index = Math.max(...markers.map((marker) => buffer.lastIndexOf(marker)));
    if (index < 0) {
      if (start === 0) return null;
      upTo = start + longest - 1; // a marker across the chunk boundary is found in the next chunk
      continue;
    }
    const lineStart = start + index + 1;
    const line = await readLine(file, lineStart, size);
    const value = line && parse(line);
    if (line && value) return { lineStart, endOffset: lineStart + line.length + 1, value };
    // A marker's only '\n' is its first byte: no other match can overlap this one.
    upTo = start + index;
  }
  return null;
}

/** Where the sink carries on: after the last complete seal (or restore) line that parses. */
export const lastResumeLine = (file: FileHandle, size: number) =>
  findLineBackwards(file, size, [SEAL_MARKER, RESTORE_MARKER], parseResumeLine);

/** The (last) seal line stored under `sealId`, with its JWS: where the file held that seal. */
export function sealLineById(file: FileHandle, size: number, sealId: string) {
  const marker = Buffer.from(`\n{"type":"seal","id":${JSON.stringify(sealId)},`);
  return findLineBackwards(file, size, [marker], (line) => {
    const value = JSON.parse(line.toString('utf8')) as { id?: unknown; seal?: unknown };
    return value.id === sealId && typeof value.seal === 'string' ? { jws: value.seal } : null;
  });
}

/** The event lines of bytes [start, end) of the file, in order, as stored (seal and restore lines skipped). */
export async function* eventsIn(path: string, start: number, end: number): AsyncGenerator<RawAuditEntry> {
  if (end <= start) return;
  const lines = createInterface({
    input: createReadStream(path, { start, end: end - 1 }),
    crlfDelay: Infinity,
  });
  for await (const line of lines) {
    if (!line.startsWith('{"type":"event"')) continue;
    const value = JSON.parse(line) as { id: string; event: unknown };
    yield { id: value.id, json: JSON.stringify(value.event) };
  }
}
