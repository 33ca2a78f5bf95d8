import type { JSONWebKeySet } from 'jose';
import { eventDigest, nextChain } from './audit-chain';
import type { RestoreNotice, TrimNotice } from './audit-gaps';
import type { PlacedRestore } from './audit-lines';
import type { RawAuditEntry, StoredSeal } from './audit-log';
import type { AuditProblem } from './audit-problems';
import { checkSealOrder, restoreNotices, segmentsOf, type CheckedSeal } from './verify-seal-order';
import { streamIdKey } from './stream-ids';

export type { AuditProblem, AuditProblemKind } from './audit-problems';

export interface AuditVerification {
  ok: boolean;
  /** full: the whole log, every seal chained to the one before; partial: an export of some events. */
  mode: 'full' | 'partial';
  events: number;
  verifiedEvents: number;
  seals: number;
  /** Events after the newest seal. */
  unsealed: number;
  head: { seq: number; id: string; hash: string; sealedAt: string } | null;
  problems: AuditProblem[];
  /** Times Redis came back from an older snapshot behind the audit file (not a problem: said, with both heads). */
  restores: RestoreNotice[];
  /** The retention trimmed the start of the log: the first seal is its anchor (not a problem). */
  trimmed: TrimNotice | null;
}

export interface VerifyAuditInput {
  entries: readonly RawAuditEntry[];
  seals: readonly StoredSeal[];
  jwks: JSONWebKeySet;
  mode: 'full' | 'partial';
  /**
   * Events after the newest seal: `fail` (a file sink never writes one), or tolerated while younger than
   * `graceMs` (a live log: the sealer runs about once a second).
   */
  unsealed?: 'fail' | { nowMs: number; graceMs: number };
  /** A head noted earlier (`seq:hash` from a past verify or the API's log): the chain must still pass through it. */
  expectHead?: { seq: number; hash: string };
  /** partial: what the export claims to hold; an event outside it is reported. */
  filter?: Record<string, string>;
  /** A file's restore lines (parseAuditLines): after each, the chain goes on from an earlier seal. */
  restores?: readonly PlacedRestore[];
}

/** Groups events under the seal covering them (the first whose last id is not before theirs). */
function groupBySeal(entries: readonly RawAuditEntry[], seals: readonly CheckedSeal[]) {
  const groups = new Map<CheckedSeal, RawAuditEntry[]>(seals.map((seal) => [seal, []]));
  const unsealed: RawAuditEntry[] = [];
  for (const entry of entries) {
    const key = streamIdKey(entry.id);
    let low = 0;
    let high = seals.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if ((seals[middle] as CheckedSeal).key < key) low = middle + 1;
      else high = middle;
    }
    const seal = seals[low];
    if (seal) groups.get(seal)?.push(entry);
    else unsealed.push(entry);
  }
  return { groups, unsealed };
}

/** Changed events whose content was sealed under another event's id: swapped, not edited. */
function swappedIds(
  unmatched: readonly (RawAuditEntry & { digest: string })[],
  group: readonly RawAuditEntry[],
  positions: ReadonlyMap<string, number>,
): Set<string> {
  const moved = new Set<string>();
  // Only a handful: this costs a hash per pair, and a wholesale rewrite is reported as changed anyway.
  if (unmatched.length > 32) return moved;
  for (const entry of unmatched) {
    const home = group.find(
      (candidate) =>
        candidate.id !== entry.id && positions.has(eventDigest(candidate.id, entry.json).toString('hex')),
    );
    if (home) moved.add(entry.id);
  }
  return moved;
}

/** Compares a seal's events with what it sealed, and names what differs: changed, removed, reordered. */
function checkGroup(seal: CheckedSeal, group: readonly RawAuditEntry[], problems: AuditProblem[]): number {
  const expected = seal.digests;
  const positions = new Map(expected.map((digest, index) => [digest, index]));
  const actual = group.map((entry) => ({
    ...entry,
    digest: eventDigest(entry.id, entry.json).toString('hex'),
  }));
  const matched = actual.filter((entry) => positions.has(entry.digest));
  const unmatched = actual.filter((entry) => !positions.has(entry.digest));
  const moved = swappedIds(unmatched, group, positions);
  if (moved.size > 0)
    problems.push({
      kind: 'reordered',
      message: `events ${[...moved].join(', ')} hold each other's sealed content (reordered)`,
      ids: [...moved],
    });
  for (const entry of unmatched.filter((candidate) => !moved.has(candidate.id)))
    problems.push({
      kind: 'changed',
      message: `event ${entry.id} differs from what seal ${seal.id} sealed (changed, or inserted)`,
      ids: [entry.id],
    });
  const seen = new Set(matched.map((entry) => positions.get(entry.digest)));
  const missing = expected.map((_, index) => index).filter((index) => !seen.has(index));
  if (missing.length > unmatched.length)
    problems.push({
      kind: 'removed',
      message: `${missing.length - unmatched.length} sealed event(s) are missing among events ${missing
        .slice(0, 20)
        .map((index) => seal.payload.firstSeq + index)
        .join(', ')}${missing.length > 20 ? ', …' : ''} (seal ${seal.id})`,
      ids: [seal.id],
    });
  const order = matched.map((entry) => positions.get(entry.digest) ?? 0);
  const outOfOrder = matched.filter((_, index) => index > 0 && (order[index] ?? 0) < (order[index - 1] ?? 0));
  if (outOfOrder.length > 0)
    problems.push({
      kind: 'reordered',
      message: `events ${outOfOrder.map((entry) => entry.id).join(', ')} are out of their sealed order`,
      ids: outOfOrder.map((entry) => entry.id),
    });
  let hash = seal.payload.prevHash;
  for (const digest of expected) hash = nextChain(hash, Buffer.from(digest, 'hex'));
  if (hash !== seal.payload.hash)
    problems.push({
      kind: 'bad-seal',
      message: `seal ${seal.id} is not chained consistently`,
      ids: [seal.id],
    });
  return matched.length;
}

/** Events must come in stream order (an export or a file sink with lines swapped). */
function checkEntryOrder(entries: readonly RawAuditEntry[], problems: AuditProblem[]) {
  const keys = entries.map((entry) => streamIdKey(entry.id));
  const late = entries.filter(
    (_, index) => index > 0 && (keys[index] as string) <= (keys[index - 1] as string),
  );
  if (late.length > 0)
    problems.push({
      kind: 'reordered',
      message: `events ${late
        .slice(0, 20)
        .map((entry) => entry.id)
        .join(', ')} are out of stream order`,
      ids: late.map((entry) => entry.id),
    });
}

/**
 * The chain must pass through a head noted earlier: else the log was cut back or rewritten since. After a
 * restore a file holds two runs over the same sequence numbers: passing through either will do.
 */
function checkExpectedHead(seals: readonly CheckedSeal[], expect: { seq: number; hash: string }) {
  const covering = seals.filter(
    (seal) => seal.payload.firstSeq <= expect.seq && seal.payload.lastSeq >= expect.seq,
  );
  if (covering.length === 0)
    return {
      kind: 'truncated-end' as const,
      message: `no seal covers event ${expect.seq}, noted earlier: the newest events were removed with their seals`,
    };
  const passes = covering.some((seal) => {
    let hash = seal.payload.prevHash;
    for (const digest of seal.digests.slice(0, expect.seq - seal.payload.firstSeq + 1))
      hash = nextChain(hash, Buffer.from(digest, 'hex'));
    return hash === expect.hash;
  });
  return passes
    ? null
    : {
        kind: 'truncated-end' as const,
        message: `the chain at event ${expect.seq} is not the hash noted earlier`,
      };
}

const FILTER_FIELDS: Record<string, string> = {
  task: 'task',
  lease: 'lease',
  identity: 'subject',
  issuer: 'issuer',
};

/** partial: each event is one its seal sealed, and inside what the export claims to hold. */
function checkPartial(
  groups: Map<CheckedSeal, RawAuditEntry[]>,
  input: VerifyAuditInput,
  problems: AuditProblem[],
) {
  let verified = 0;
  for (const [seal, group] of groups) {
    const sealed = new Set(seal.digests);
    for (const entry of group) {
      const event = JSON.parse(entry.json) as Record<string, unknown>;
      const outside = Object.entries(input.filter ?? {}).find(
        ([name, value]) => event[FILTER_FIELDS[name] ?? name] !== value,
      );
      if (outside)
        problems.push({
          kind: 'foreign',
          message: `event ${entry.id} is not one of the export's (${outside[0]} ${outside[1]})`,
          ids: [entry.id],
        });
      else if (sealed.has(eventDigest(entry.id, entry.json).toString('hex'))) verified++;
      else
        problems.push({
          kind: 'changed',
          message: `event ${entry.id} is not one seal ${seal.id} sealed (changed, or inserted)`,
          ids: [entry.id],
        });
    }
  }
  return verified;
}

/** Unsealed events that should have been sealed by now (or, in a file, at all). */
function checkUnsealed(unsealed: readonly RawAuditEntry[], input: VerifyAuditInput): AuditProblem | null {
  const rule = input.unsealed ?? 'fail';
  const late =
    rule === 'fail'
      ? unsealed
      : unsealed.filter((entry) => Number(entry.id.split('-')[0]) < rule.nowMs - rule.graceMs);
  if (late.length === 0) return null;
  return {
    kind: 'unsealed',
    message:
      rule === 'fail'
        ? `${late.length} event(s) have no seal`
        : `${late.length} event(s) older than ${rule.graceMs / 1000} s have no seal (is an API running? did its sealer stop?)`,
    ids: late.slice(0, 20).map((entry) => entry.id),
  };
}

/**
 * Verifies audit events against their seals and the broker's public keys (a JWKS the verifier trusts: pin
 * it rather than fetch it from the broker being checked). `full`: the whole log, so every sealed event must
 * be present and every seal chained to the previous one; `partial`: an export of some events, each of which
 * must be one its seal sealed (that none of the task's events was left out is what a full verify shows).
 */
export async function verifyAudit(input: VerifyAuditInput): Promise<AuditVerification> {
  const problems: AuditProblem[] = [];
  const segments = await segmentsOf(input, problems);
  const trimmed = input.mode === 'full' ? checkSealOrder(segments, problems) : null;
  let verifiedEvents = 0;
  const unsealed: RawAuditEntry[] = [];
  for (const segment of segments) {
    checkEntryOrder(segment.entries, problems);
    const grouped = groupBySeal(segment.entries, segment.seals);
    unsealed.push(...grouped.unsealed);
    if (input.mode === 'partial') verifiedEvents += checkPartial(grouped.groups, input, problems);
    else
      for (const [seal, group] of grouped.groups)
        if (seal.id !== trimmed?.anchor.id) verifiedEvents += checkGroup(seal, group, problems);
  }
  const unsealedProblem = checkUnsealed(unsealed, input);
  if (unsealedProblem) problems.push(unsealedProblem);
  const seals = segments.flatMap((segment) => segment.seals);
  const headProblem = input.expectHead ? checkExpectedHead(seals, input.expectHead) : null;
  if (headProblem) problems.push(headProblem);
  const last = seals[seals.length - 1];
  return {
    ok: problems.length === 0,
    mode: input.mode,
    events: input.entries.length,
    verifiedEvents,
    seals: seals.length,
    unsealed: unsealed.length,
    head: last
      ? {
          seq: last.payload.lastSeq,
          id: last.id,
          hash: last.payload.hash,
          sealedAt: new Date(last.payload.sealedAtMs).toISOString(),
        }
      : null,
    problems,
    restores: input.mode === 'full' ? restoreNotices(input) : [],
    trimmed,
  };
}
