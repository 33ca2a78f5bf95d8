import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { createLocalJWKSet } from 'jose';
import type { RedisKeys } from '../leases/keys';
import { luaScript } from '../leases/lua-script';
import type { SigningKeyRing } from '../signing/signing-keys';
import { buildSeal, follows, GENESIS_CHAIN, signSeal, verifySeal } from './audit-chain';
import type { AuditLog, StoredSeal } from './audit-log';

const BATCH = 1000;
/** Per tick; a backlog larger than this (after an outage) is caught up over the next ticks. */
const MAX_BATCHES_PER_TICK = 50;
const LOCK_MS = 15_000;

const RELEASE_LOCK = luaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`);

interface Head {
  id: string;
  lastSeq: number;
  hash: string;
}
const GENESIS: Head = { id: '', lastSeq: 0, hash: GENESIS_CHAIN };

/** The seals in Redis are not a continuation of what this process saw: someone rewrote the log. */
export class AuditTamperError extends Error {}

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
  redis: Redis;
  keys: RedisKeys;
  audit: AuditLog;
  signingKeys: SigningKeyRing;
  brokerIssuer: string;
  intervalMs: number;
  nowMs: () => number;
  onError: (error: unknown) => void;
  /** Each new seal: its last event's sequence number and the chain hash there, for the log outside Redis. */
  onSealed?: (head: { seq: number; id: string; hash: string; events: number }) => void;
}): AuditSealer {
  const { redis, keys, audit } = deps;
  const ownKeys = createLocalJWKSet(deps.signingKeys.jwks);
  const log = keys.prefix;
  /** The newest seal this process has seen; the seals in Redis must carry on from it. */
  let known: Head | null = null;
  let halted: AuditTamperError | null = null;

  /**
   * The head to seal after: the newest seal, checked. Fails closed (seals nothing more) when it is not the
   * broker's, or does not carry on from what this process saw: otherwise whoever can write to Redis could
   * delete the seals, edit the events, and have the broker sign the edited history.
   */
  async function checkedHead(newest: StoredSeal | null): Promise<Head> {
    if (!newest) {
      if (known)
        throw new AuditTamperError(
          `the audit seals are gone from Redis (this process saw seal ${known.id}, event ${known.lastSeq})`,
        );
      return GENESIS;
    }
    const { payload } = await verifySeal(newest, ownKeys).catch((error: Error) => {
      throw new AuditTamperError(`the newest audit seal ${newest.id} does not verify: ${error.message}`);
    });
    if (payload.log !== log)
      throw new AuditTamperError(`the newest audit seal belongs to log "${payload.log}"`);
    const head = { id: newest.id, lastSeq: payload.lastSeq, hash: payload.hash };
    if (!known || (head.id === known.id && head.hash === known.hash)) return head;
    // Sealed by another replica since: every seal after the one this process knew must carry on from it.
    let previous: Head = known;
    for (const seal of await audit.seals(known.id, 10_000)) {
      const next = await verifySeal(seal, ownKeys).catch(() => null);
      if (!next || !follows(next.payload, previous))
        throw new AuditTamperError(
          `audit seal ${seal.id} does not carry on from seal ${previous.id} (event ${previous.lastSeq})`,
        );
      previous = { id: seal.id, lastSeq: next.payload.lastSeq, hash: next.payload.hash };
    }
    if (previous.id !== head.id)
      throw new AuditTamperError(`the audit seals after seal ${known.id} were rewritten`);
    return head;
  }

  async function sealBatch(): Promise<number> {
    const newest = await audit.newestSeal();
    const previous = await checkedHead(newest);
    known = previous.id ? previous : known;
    const entries = await audit.entries(newest?.id, BATCH);
    if (entries.length === 0) return 0;
    const seal = buildSeal(log, previous, entries, deps.nowMs());
    const jws = await signSeal(deps.signingKeys, deps.brokerIssuer, seal);
    // Lost the race to another sealer: it sealed these; nothing to do until the next tick.
    if (!(await audit.appendSeal(newest?.id ?? '', { id: seal.lastId, jws }))) return 0;
    known = { id: seal.lastId, lastSeq: seal.lastSeq, hash: seal.hash };
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
      await RELEASE_LOCK(redis, [keys.auditSealLock()], [token]);
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
