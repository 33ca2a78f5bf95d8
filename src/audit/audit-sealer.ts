import { randomUUID } from 'node:crypto';
import { createLocalJWKSet } from 'jose';
import type { RedisClient } from '../redis/connection';
import type { RedisKeys } from '../redis/keys';
import { runScript } from '../redis/scripts';
import type { SigningKeyRing } from '../signing/signing-keys';
import { buildSeal, follows, GENESIS_CHAIN, signSeal, verifySeal } from './audit-chain';
import type { AuditLog, StoredSeal } from './audit-log';

const BATCH = 1000;
/** Per tick; a backlog larger than this (after an outage) is caught up over the next ticks. */
const MAX_BATCHES_PER_TICK = 50;
const LOCK_MS = 15_000;

interface Head {
  id: string;
  lastSeq: number;
  hash: string;
}
const GENESIS: Head = { id: '', lastSeq: 0, hash: GENESIS_CHAIN };

/** The seals in Redis are not a continuation of what this process saw: someone rewrote the log. */
export class AuditTamperError extends Error {}

/**
 * Seals this process saw that a primary change took away: the promoted replica never got them, or Redis
 * came back from an older snapshot.
 */
export interface FailoverLoss {
  /** The newest seal this process saw that the new primary holds (where its log now carries on from). */
  kept: { seq: number; id: string };
  /** The newest seal this process had seen, now gone. */
  lost: { seq: number; id: string };
}

/** How many of its latest seals a sealer remembers, to find where a new primary's log carries on from. */
const REMEMBERED = 512;

export interface AuditSealer {
  /** Seals whatever is unsealed now; resolves to how many events it sealed. */
  sealNow(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * Chains and signs the audit stream, a batch at a time, in stream order. Runs in the API process, the one
 * holding the signing keys; among replicas one seals at a time (a lock saves the others the work, the
 * seal's compare-and-set keeps it correct should two ever race). Appending events never waits on it, so
 * issuance pays nothing for the chain; an event is unsealed for about one interval.
 */
export function startAuditSealer(deps: {
  redis: RedisClient;
  keys: RedisKeys;
  audit: AuditLog;
  signingKeys: SigningKeyRing;
  brokerIssuer: string;
  intervalMs: number;
  nowMs: () => number;
  onError: (error: unknown) => void;
  /**
   * The replication id of the primary written to: `last` as last read (cheap), `current` read now. A seal is
   * remembered with the primary it was appended on, so a log cut back can be told from a failover.
   */
  primary: { last(): string; current(): Promise<string> };
  /**
   * The primary changed and the new one lacks this process's newest seals (a replica that was not promoted
   * had confirmed them, or none had; or Redis was restored from an older snapshot): reported, and sealing
   * carries on from the newest seal it still holds.
   */
  onFailoverLoss: (loss: FailoverLoss) => void;
  /** Each new seal: its last event's sequence number and the chain hash there, for the log outside Redis. */
  onSealed?: (head: { seq: number; id: string; hash: string; events: number }) => void;
}): AuditSealer {
  const { redis, keys, audit } = deps;
  const ownKeys = createLocalJWKSet(deps.signingKeys.jwks);
  const log = keys.prefix;
  /** The newest seal this process has seen, and the primary it saw it on; Redis's seals carry on from it. */
  let known: (Head & { primary: string }) | null = null;
  /** The latest seals seen, oldest first: after a failover, the new primary's log carries on from one. */
  const remembered: Head[] = [];
  let halted: AuditTamperError | null = null;
  const same = (a: Head, b: Head) => a.id === b.id && a.hash === b.hash;

  /** Do the seals after `from` verify, each carrying on from the one before, up to `head`? */
  async function carriesOn(from: Head, head: Head): Promise<boolean> {
    if (same(from, head)) return true;
    let previous = from;
    for (const seal of await audit.seals(from.id || undefined, 10_000)) {
      const next = await verifySeal(seal, ownKeys).catch(() => null);
      if (!next || !follows(next.payload, previous)) return false;
      previous = { id: seal.id, lastSeq: next.payload.lastSeq, hash: next.payload.hash };
      if (same(previous, head)) return true;
    }
    return false;
  }

  /**
   * The head to seal after: the newest seal, checked. Fails closed (seals nothing more) when it is not the
   * broker's, or does not carry on from what this process saw: otherwise whoever can write to Redis could
   * delete the seals, edit the events, and have the broker sign the edited history. One exception: the
   * primary changed since the newest seal seen, and the new primary's log carries on from a seal this
   * process saw before it, or ends at a genuine seal older than the newest seen. A failover does that (the
   * promoted replica never got the last seals, even where a replica that was not promoted confirmed them),
   * and so does a Redis restarted from an older snapshot (a new replication id): it is reported as a loss
   * and sealing continues (the worker's audit file, when there is one, checks the events and recovers the
   * leases: audit-file-restore.ts). A log cut back on the same primary, a log gone altogether, or a newest
   * seal at or past the newest seen that does not carry on from it, still halts it.
   */
  async function checkedHead(newest: StoredSeal | null): Promise<Head> {
    let head = GENESIS;
    if (newest) {
      const { payload } = await verifySeal(newest, ownKeys).catch((error: Error) => {
        throw new AuditTamperError(`the newest audit seal ${newest.id} does not verify: ${error.message}`);
      });
      if (payload.log !== log)
        throw new AuditTamperError(`the newest audit seal belongs to log "${payload.log}"`);
      head = { id: newest.id, lastSeq: payload.lastSeq, hash: payload.hash };
    }
    if (!known || (await carriesOn(known, head))) return head;
    const kept =
      known.primary !== (await deps.primary.current()) ? await keptAfterPrimaryChange(known, head) : null;
    if (kept) {
      deps.onFailoverLoss({
        kept: { seq: kept.lastSeq, id: kept.id },
        lost: { seq: known.lastSeq, id: known.id },
      });
      return head;
    }
    if (!newest)
      throw new AuditTamperError(
        `the audit seals are gone from Redis (this process saw seal ${known.id}, event ${known.lastSeq})`,
      );
    throw new AuditTamperError(
      `the audit seals after seal ${known.id} (event ${known.lastSeq}) were rewritten: seal ${head.id} does not carry on from it`,
    );
  }

  /**
   * Where the new primary's log carries on from: the newest remembered seal it carries on from (newest
   * first; most fail at once); or, when it is older than all of them (a Redis restored from an older
   * snapshot), its newest seal itself, a genuine seal of this log (checked) from before the newest seen.
   */
  async function keptAfterPrimaryChange(seen: Head, head: Head): Promise<Head | null> {
    for (let at = remembered.length - 1; at >= 0; at--) {
      const candidate = remembered[at] as Head;
      if (await carriesOn(candidate, head)) return candidate;
    }
    return head.id !== '' && head.lastSeq < seen.lastSeq ? head : null;
  }

  function see(head: Head, primary: string) {
    known = { ...head, primary };
    const last = remembered[remembered.length - 1];
    // No seal at all is never where a log carries on from after a failover: "the seals are gone" halts.
    if (head.id === '' || (last && same(last, head))) return;
    remembered.push(head);
    if (remembered.length > REMEMBERED) remembered.shift();
  }

  async function sealBatch(): Promise<number> {
    const primary = deps.primary.last();
    const newest = await audit.newestSeal();
    const previous = await checkedHead(newest);
    see(previous, primary);
    const entries = await audit.entries(newest?.id, BATCH);
    if (entries.length === 0) return 0;
    const seal = buildSeal(log, previous, entries, deps.nowMs());
    const jws = await signSeal(deps.signingKeys, deps.brokerIssuer, seal);
    const appended = await audit.appendSeal(newest?.id ?? '', { id: seal.lastId, jws });
    // Lost the race to another sealer: it sealed these; nothing to do until the next tick.
    if (appended === 'raced') return 0;
    // Appended ('unconfirmed' too: fewer replicas than asked have it, but the primary does).
    see({ id: seal.lastId, lastSeq: seal.lastSeq, hash: seal.hash }, primary);
    deps.onSealed?.({ seq: seal.lastSeq, id: seal.lastId, hash: seal.hash, events: entries.length });
    return entries.length;
  }

  async function sealNow(): Promise<number> {
    // Reported once, when it happened (and counted in a metric); a restart after a verify clears it.
    if (halted) return 0;
    const token = randomUUID();
    if ((await redis.set(keys.auditSealLock(), token, 'PX', LOCK_MS, 'NX')) !== 'OK') return 0;
    let sealed = 0;
    try {
      for (let batch = 0; batch < MAX_BATCHES_PER_TICK; batch++) {
        const count = await sealBatch().catch((error: unknown) => {
          if (error instanceof AuditTamperError) halted = error;
          throw error;
        });
        sealed += count;
        if (count < BATCH) break;
      }
    } finally {
      await runScript(redis, 'releaseLock', [keys.auditSealLock()], [token]);
    }
    return sealed;
  }

  let stopped = false;
  let running: Promise<unknown> = Promise.resolve();
  let timer: NodeJS.Timeout | undefined;
  const tick = () => {
    running = sealNow()
      .catch(deps.onError)
      .finally(() => {
        if (!stopped) timer = setTimeout(tick, deps.intervalMs);
      });
  };
  timer = setTimeout(tick, deps.intervalMs);

  return {
    sealNow,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
      // What was appended since the last tick is sealed before the process goes.
      await sealNow().catch(deps.onError);
    },
  };
}
