import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose';
import {
  eventDigest,
  GENESIS_CHAIN,
  nextChain,
  SEAL_TYPE,
  splitDigests,
  type SealPayload,
} from './audit-chain';
import type { RawAuditEntry, StoredSeal } from './audit-log';
import { compareStreamIds } from './stream-ids';

export type AuditProblemKind =
  'bad-seal' | 'seal-gap' | 'truncated-start' | 'changed' | 'removed' | 'reordered' | 'unsealed';

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
  /** Events after the newest seal: not yet sealed (the sealer runs about once a second). */
  unsealed: number;
  head: { seq: number; id: string; hash: string; sealedAt: string } | null;
  problems: AuditProblem[];
}

const ALGORITHMS = ['ES256', 'ES384', 'ES512', 'EdDSA', 'RS256', 'PS256'];

interface CheckedSeal {
  id: string;
  payload: SealPayload;
  digests: string[];
}

/** Signature, type and shape of every seal; a seal that fails is reported and left out. */
async function checkSeals(seals: readonly StoredSeal[], jwks: JSONWebKeySet, problems: AuditProblem[]) {
  const keySet = createLocalJWKSet(jwks);
  const out: CheckedSeal[] = [];
  for (const seal of seals) {
    try {
      const { payload } = await jwtVerify(seal.jws, keySet, { typ: SEAL_TYPE, algorithms: ALGORITHMS });
      const sealPayload = payload as unknown as SealPayload;
      const digests = splitDigests(String(sealPayload.digests ?? ''));
      if (
        sealPayload.v !== 1 ||
        sealPayload.lastId !== seal.id ||
        digests.length !== sealPayload.lastSeq - sealPayload.firstSeq + 1
      )
        throw new Error('its content does not describe the events it is stored with');
      out.push({ id: seal.id, payload: sealPayload, digests });
    } catch (error) {
      problems.push({
        kind: 'bad-seal',
        message: `seal ${seal.id} does not verify: ${(error as Error).message}`,
        ids: [seal.id],
      });
    }
  }
  return out.sort((a, b) => compareStreamIds(a.id, b.id));
}

/** Seals must follow each other: no sequence number skipped, each chained to the previous one's hash. */
function checkSealOrder(seals: readonly CheckedSeal[], problems: AuditProblem[]) {
  const first = seals[0];
  if (first && (first.payload.firstSeq !== 1 || first.payload.prevHash !== GENESIS_CHAIN)) {
    problems.push({
      kind: 'truncated-start',
      message: `the log starts at event ${first.payload.firstSeq}, not at the first event ever sealed`,
    });
  }
  seals.forEach((seal, index) => {
    const previous = seals[index - 1];
    if (!previous) return;
    if (
      seal.payload.firstSeq !== previous.payload.lastSeq + 1 ||
      seal.payload.prevHash !== previous.payload.hash
    )
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
    // Binary search over the seals, sorted by id: the log may hold millions of events.
    let low = 0;
    let high = seals.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (compareStreamIds(seals[middle]?.id ?? '0-0', entry.id) < 0) low = middle + 1;
      else high = middle;
    }
    const seal = seals[low];
    if (seal) groups.get(seal)?.push(entry);
    else unsealed.push(entry);
  }
  return { groups, unsealed };
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
  const moved = new Set<string>();
  for (const entry of unmatched) {
    // Content that was sealed under another event's id: the events were swapped, not edited.
    const other = actual.find(
      (candidate) =>
        candidate.id !== entry.id && positions.has(eventDigest(candidate.id, entry.json).toString('hex')),
    );
    if (other) moved.add(entry.id);
  }
  if (moved.size > 0)
    problems.push({
      kind: 'reordered',
      message: `events ${[...moved].join(', ')} hold each other's sealed content (reordered)`,
      ids: [...moved],
    });
  const changed = unmatched.filter((entry) => !moved.has(entry.id));
  for (const entry of changed)
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
        .map((index) => seal.payload.firstSeq + index)
        .join(', ')} (seal ${seal.id})`,
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
  const late = entries.filter(
    (entry, index) => index > 0 && compareStreamIds(entry.id, entries[index - 1]?.id ?? '0-0') <= 0,
  );
  if (late.length > 0)
    problems.push({
      kind: 'reordered',
      message: `events ${late.map((entry) => entry.id).join(', ')} are out of stream order`,
      ids: late.map((entry) => entry.id),
    });
}

/**
 * Verifies audit events against their seals and the broker's public keys (a JWKS the verifier trusts: pin
 * it rather than fetch it from the broker being checked). `full`: the whole log, so every sealed event must
 * be present and every seal chained to the previous one; `partial`: a filtered export, where each event
 * must be one its seal sealed.
 */
export async function verifyAudit(input: {
  entries: readonly RawAuditEntry[];
  seals: readonly StoredSeal[];
  jwks: JSONWebKeySet;
  mode: 'full' | 'partial';
}): Promise<AuditVerification> {
  const problems: AuditProblem[] = [];
  const seals = await checkSeals(input.seals, input.jwks, problems);
  if (input.mode === 'full') checkSealOrder(seals, problems);
  checkEntryOrder(input.entries, problems);
  const { groups, unsealed } = groupBySeal(input.entries, seals);
  let verifiedEvents = 0;
  for (const [seal, group] of groups) {
    if (input.mode === 'full') {
      verifiedEvents += checkGroup(seal, group, problems);
      continue;
    }
    const sealed = new Set(seal.digests);
    for (const entry of group) {
      if (sealed.has(eventDigest(entry.id, entry.json).toString('hex'))) verifiedEvents++;
      else
        problems.push({
          kind: 'changed',
          message: `event ${entry.id} is not one seal ${seal.id} sealed (changed, or inserted)`,
          ids: [entry.id],
        });
    }
  }
  if (input.mode === 'partial' && unsealed.length > 0)
    problems.push({
      kind: 'unsealed',
      message: `${unsealed.length} exported event(s) have no seal with them`,
      ids: unsealed.map((entry) => entry.id),
    });
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
