import { randomBytes, randomUUID } from 'node:crypto';

/** Task, approval and revocation ids: 122 random bits (UUID v4) as 32 hex characters. */
export const newId = (): string => randomUUID().replaceAll('-', '');

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const LEASE_ID_LENGTH = 22;

/**
 * Lease ids: 128 random bits as 22 base-62 characters (62^22 > 2^128). A lease id is written about eight
 * times per lease (its key, its hash, four index sets, the due index, its audit event), so ten characters
 * fewer than hex is about 80 B of Redis per active lease. Letters and digits only: safe in a URL, as a CLI
 * argument (never a leading `-`), in an STS session name and a Vault display name.
 */
export function newLeaseId(): string {
  let value = BigInt(`0x${randomBytes(16).toString('hex')}`);
  let id = '';
  for (let i = 0; i < LEASE_ID_LENGTH; i++) {
    id = `${BASE62[Number(value % 62n)]}${id}`;
    value /= 62n;
  }
  return id;
}
