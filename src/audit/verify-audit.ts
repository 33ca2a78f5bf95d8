import { createLocalJWKSet, type JSONWebKeySet } from 'jose';
import { eventDigest, follows, GENESIS_CHAIN, nextChain, verifySeal, type SealPayload } from './audit-chain';
import type { RawAuditEntry, StoredSeal } from './audit-log';
import { streamIdKey } from './stream-ids';

export type AuditProblemKind =
  | 'bad-seal'
  | 'seal-gap'
  | 'truncated-start'
  | 'truncated-end'
  | 'changed'
  | 'removed'
  | 'reordered'
  | 'unsealed'
  | 'foreign'
  | 'malformed';

export interface AuditProblem {
  kind: AuditProblemKind;
  message: string;
  /** Event ids (or a seal's id) concerned, when known. */
  ids?: string[];
}

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
}

interface CheckedSeal {
  id: string;
  key: string;
  payload: SealPayload;
  digests: string[];
}

/** Signature, type, shape and log of every seal; a seal that fails is reported and left out. */
async function checkSeals(seals: readonly StoredSeal[], jwks: JSONWebKeySet, problems: AuditProblem[]) {
  const keySet = createLocalJWKSet(jwks);
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
  out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  // Deployments sharing signing keys: a seal of another log is not evidence for this one.
  const log = out[out.length - 1]?.payload.log;
  return out.filter((seal) => {
    if (seal.payload.log === log) return true;
    problems.push({
      kind: 'bad-seal',
      message: `seal ${seal.id} belongs to log "${seal.payload.log}", not "${log}"`,
      ids: [seal.id],
    });
    return false;
  });
}

/** Seals must follow each other from the first event ever sealed: no gap, each chained to the previous. */
function checkSealOrder(seals: readonly CheckedSeal[], problems: AuditProblem[]) {
  const first = seals[0];
  if (first && !follows(first.payload, { lastSeq: 0, hash: GENESIS_CHAIN }))
    problems.push({
      kind: 'truncated-start',
      message: `the log starts at event ${first.payload.firstSeq}, not at the first event ever sealed`,
    });
  seals.forEach((seal, index) => {
    const previous = seals[index - 1];
    if (previous && !follows(seal.payload, previous.payload))
      problems.push({
        kind: 'seal-gap',
        message: `seals are missing or out of order between events ${previous.payload.lastSeq} and ${seal.payload.firstSeq} (seal ${seal.id} does not follow seal ${previous.id})`,
        ids: [previous.id, seal.id],
      });
  });
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

/** The chain must pass through a head noted earlier: else the log was cut back or rewritten since. */
function checkExpectedHead(seals: readonly CheckedSeal[], expect: { seq: number; hash: string }) {
  const seal = seals.find((candidate) => candidate.payload.lastSeq >= expect.seq);
  if (!seal || seal.payload.firstSeq > expect.seq)
    return {
      kind: 'truncated-end' as const,
      message: `no seal covers event ${expect.seq}, noted earlier: the newest events were removed with their seals`,
    };
  let hash = seal.payload.prevHash;
  for (const digest of seal.digests.slice(0, expect.seq - seal.payload.firstSeq + 1))
    hash = nextChain(hash, Buffer.from(digest, 'hex'));
  return hash === expect.hash
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
  const seals = await checkSeals(input.seals, input.jwks, problems);
  if (input.mode === 'full') checkSealOrder(seals, problems);
  checkEntryOrder(input.entries, problems);
  const { groups, unsealed } = groupBySeal(input.entries, seals);
  let verifiedEvents = 0;
  if (input.mode === 'partial') verifiedEvents = checkPartial(groups, input, problems);
  else for (const [seal, group] of groups) verifiedEvents += checkGroup(seal, group, problems);
  const unsealedProblem = checkUnsealed(unsealed, input);
  if (unsealedProblem) problems.push(unsealedProblem);
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
  };
}
