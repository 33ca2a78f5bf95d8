import { createLocalJWKSet, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import { follows, GENESIS_CHAIN, verifySeal, type SealPayload } from './audit-chain';
import { restoresRecorded, trimOf, type RestoreNotice, type TrimNotice } from './audit-gaps';
import type { PlacedRestore } from './audit-lines';
import type { RawAuditEntry, StoredSeal } from './audit-log';
import type { AuditProblem } from './audit-problems';
import { streamIdKey } from './stream-ids';

/**
 * The order of the seals, for `audit verify` (verify-audit.ts): each seal's signature, each chained to the
 * one before from the first event ever sealed — or from a trim's anchor, or, after a file's restore line,
 * from the earlier seal Redis went on from.
 */

export interface ChainInput {
  entries: readonly RawAuditEntry[];
  seals: readonly StoredSeal[];
  jwks: JSONWebKeySet;
  restores?: readonly PlacedRestore[];
}

export interface CheckedSeal {
  id: string;
  key: string;
  payload: SealPayload;
  digests: string[];
}

/** Signature, type and shape of every seal, in stream order; a seal that fails is reported and left out. */
async function checkSeals(seals: readonly StoredSeal[], keySet: JWTVerifyGetKey, problems: AuditProblem[]) {
  const out: CheckedSeal[] = [];
  for (const seal of seals) {
    try {
      const { payload, digests } = await verifySeal(seal, keySet);
      out.push({ id: seal.id, key: streamIdKey(seal.id), payload, digests });
    } catch (error) {
      problems.push({
        kind: 'bad-seal',
        message: `seal ${seal.id} does not verify: ${(error as Error).message}`,
        ids: [seal.id],
      });
    }
  }
  return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

/** Deployments sharing signing keys: a seal of another log (than the newest seal's) is not evidence for this one. */
function sameLog(segments: Segment[], problems: AuditProblem[]) {
  const log = segments.flatMap((segment) => segment.seals).pop()?.payload.log;
  for (const segment of segments)
    segment.seals = segment.seals.filter((seal) => {
      if (seal.payload.log === log) return true;
      problems.push({
        kind: 'bad-seal',
        message: `seal ${seal.id} belongs to log "${seal.payload.log}", not "${log}"`,
        ids: [seal.id],
      });
      return false;
    });
}

/**
 * The events and seals between two restore lines of a file (a log in Redis is one segment). Each segment is
 * a run of the chain; the one after a restore line goes on from the earlier seal the line names.
 */
export interface Segment {
  entries: readonly RawAuditEntry[];
  seals: CheckedSeal[];
  /** The restore line this segment starts after. */
  restore?: PlacedRestore;
}

export async function segmentsOf(input: ChainInput, problems: AuditProblem[]): Promise<Segment[]> {
  const keySet = createLocalJWKSet(input.jwks);
  const restores = input.restores ?? [];
  const ends = [
    ...restores.map((restore) => ({ entries: restore.entriesBefore, seals: restore.sealsBefore })),
    { entries: input.entries.length, seals: input.seals.length },
  ];
  const segments: Segment[] = [];
  let from = { entries: 0, seals: 0 };
  for (const [index, to] of ends.entries()) {
    const restore = restores[index - 1];
    segments.push({
      entries: input.entries.slice(from.entries, to.entries),
      seals: await checkSeals(input.seals.slice(from.seals, to.seals), keySet, problems),
      ...(restore ? { restore } : {}),
    });
    from = to;
  }
  sameLog(segments, problems);
  return segments;
}

type Link = { lastSeq: number; hash: string };
const GENESIS_LINK: Link = { lastSeq: 0, hash: GENESIS_CHAIN };

/** A restore line must sit right after the file's head it names, and go on from an earlier seal (or genesis). */
function checkRestoreLine(
  restore: PlacedRestore,
  previous: CheckedSeal | undefined,
  earlier: ReadonlyMap<string, CheckedSeal>,
  problems: AuditProblem[],
): Link | null {
  const { fileHead, redisHead } = restore;
  const atHead =
    previous?.id === fileHead.id &&
    previous.payload.lastSeq === fileHead.seq &&
    previous.payload.hash === fileHead.hash;
  const base = redisHead.seq === 0 ? null : earlier.get(redisHead.id);
  const fromEarlier =
    redisHead.seq === 0
      ? redisHead.hash === GENESIS_CHAIN
      : base?.payload.lastSeq === redisHead.seq && base.payload.hash === redisHead.hash;
  if (atHead && fromEarlier) return { lastSeq: redisHead.seq, hash: redisHead.hash };
  problems.push({
    kind: 'seal-gap',
    message: atHead
      ? `a restore line says the chain goes on from event ${redisHead.seq} (seal ${redisHead.id}), which is no earlier seal of the file`
      : `a restore line names the file's head as event ${fileHead.seq} (seal ${fileHead.id}), but the seal before it is ${previous?.id ?? 'none'}`,
    ids: [fileHead.id, redisHead.id],
  });
  return null;
}

/**
 * Seals must follow each other from the first event ever sealed: no gap, each chained to the previous; after
 * a restore line, from the earlier seal it names. The log may start at a trim's anchor instead (returned).
 */
export function checkSealOrder(segments: readonly Segment[], problems: AuditProblem[]): TrimNotice | null {
  const earlier = new Map<string, CheckedSeal>();
  let previous: CheckedSeal | undefined;
  let trimmed: TrimNotice | null = null;
  for (const segment of segments) {
    let link: Link | null = previous ? previous.payload : null;
    if (segment.restore) link = checkRestoreLine(segment.restore, previous, earlier, problems);
    for (const seal of segment.seals) {
      if (!previous) trimmed = checkStart(segment, seal, problems);
      else if (link && !follows(seal.payload, link))
        problems.push({
          kind: 'seal-gap',
          message: `seals are missing or out of order between events ${link.lastSeq} and ${seal.payload.firstSeq} (seal ${seal.id} does not follow ${previous ? `seal ${previous.id}` : 'the start'})`,
          ids: [previous?.id ?? '', seal.id],
        });
      earlier.set(seal.id, seal);
      previous = seal;
      link = seal.payload;
    }
  }
  return trimmed;
}

/**
 * The first seal: the retention's anchor when an `audit.trimmed` event names it and none of its own events
 * is left (they were trimmed with it; the first trim's anchor may be the chain's first seal); otherwise it
 * must start the chain, or the log was cut at its start.
 */
function checkStart(segment: Segment, seal: CheckedSeal, problems: AuditProblem[]): TrimNotice | null {
  const anchor = { seq: seal.payload.lastSeq, id: seal.id, hash: seal.payload.hash };
  const ownEvents = segment.entries.some((entry) => streamIdKey(entry.id) <= seal.key);
  const trim = ownEvents ? null : trimOf(segment.entries, anchor);
  if (trim) return trim;
  if (follows(seal.payload, GENESIS_LINK)) return null;
  problems.push({
    kind: 'truncated-start',
    message: `the log starts at event ${seal.payload.firstSeq}, not at the first event ever sealed`,
  });
  return null;
}

/** The file's restore lines, and the `audit.restored` events that no line already reports. */
export function restoreNotices(input: Pick<ChainInput, 'entries' | 'restores'>): RestoreNotice[] {
  const fromFile: RestoreNotice[] = (input.restores ?? []).map((restore) => ({
    redisHead: restore.redisHead,
    fileHead: restore.fileHead,
    eventsBeyond: restore.eventsBeyond,
    detectedAt: restore.detectedAt,
    recordedIn: 'file',
  }));
  const same = (a: RestoreNotice, b: RestoreNotice) =>
    a.redisHead.id === b.redisHead.id && a.fileHead.id === b.fileHead.id;
  const fromLog = restoresRecorded(input.entries).filter((notice) => !fromFile.some((f) => same(f, notice)));
  return [...fromFile, ...fromLog];
}
