import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { decodeJwt } from 'jose';
import type { RedisKeys } from '../leases/keys';
import { luaScript } from '../leases/lua-script';
import type { SigningKeyRing } from '../signing/signing-keys';
import { buildSeal, GENESIS_CHAIN, signSeal, type SealPayload } from './audit-chain';
import type { AuditLog } from './audit-log';

const BATCH = 1000;
/** Per tick; a backlog larger than this (after an outage) is caught up over the next ticks. */
const MAX_BATCHES_PER_TICK = 50;
const LOCK_MS = 15_000;

const RELEASE_LOCK = luaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`);

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
}): AuditSealer {
  const { redis, keys, audit } = deps;

  async function sealBatch(): Promise<number> {
    const newest = await audit.newestSeal();
    const previous = newest
      ? (decodeJwt(newest.jws) as unknown as SealPayload)
      : { lastSeq: 0, hash: GENESIS_CHAIN };
    const entries = await audit.entries(newest?.id, BATCH);
    if (entries.length === 0) return 0;
    const seal = buildSeal(previous, entries, deps.nowMs());
    const jws = await signSeal(deps.signingKeys, deps.brokerIssuer, seal);
    // Lost the race to another sealer: it sealed these; nothing to do until the next tick.
    if (!(await audit.appendSeal(newest?.id ?? '', { id: seal.lastId, jws }))) return 0;
    return entries.length;
  }

  async function sealNow(): Promise<number> {
    const token = randomUUID();
    if ((await redis.set(keys.auditSealLock(), token, 'PX', LOCK_MS, 'NX')) !== 'OK') return 0;
    let sealed = 0;
    try {
      for (let batch = 0; batch < MAX_BATCHES_PER_TICK; batch++) {
        const count = await sealBatch();
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
