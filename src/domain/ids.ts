import { randomFillSync, randomUUID } from 'node:crypto';

/** Task, approval and revocation ids: 122 random bits (UUID v4) as 32 hex characters. */
export const newId = (): string => randomUUID().replaceAll('-', '');

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const LEASE_ID_LENGTH = 22;
/** Bytes at or above this are skipped, so that `byte % 62` is uniform (248 = 4 × 62). */
const UNBIASED_BELOW = 248;

// Random bytes drawn 4 KiB at a time, as randomUUID does: one call per ~180 ids, not one each.
const pool = Buffer.alloc(4096);
let poolAt = pool.length;
const randomByte = (): number => {
  if (poolAt === pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  return pool[poolAt++] as number;
};

/**
 * Lease ids: 22 base-62 characters, each drawn uniformly (131 random bits). A lease id is written about eight
 * times per lease (its key, its hash, four index sets, the due index, its audit event), so ten characters
 * fewer than hex is about 80 B of Redis per active lease. Letters and digits only: safe in a URL, as a CLI
 * argument (never a leading `-`), in an STS session name and a Vault display name.
 */
export function newLeaseId(): string {
  let id = '';
  while (id.length < LEASE_ID_LENGTH) {
    const byte = randomByte();
    if (byte < UNBIASED_BELOW) id += BASE62[byte % 62];
  }
  return id;
}
