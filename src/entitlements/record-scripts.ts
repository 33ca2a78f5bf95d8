import { luaScript } from '../leases/lua-script';

/**
 * Writes a proposed record (enrolment or entitlement), the approval it waits on, their index entries and
 * the `approval.requested` audit event in one step: no record exists without its approval and its audit
 * event. The approval part mirrors CREATE_APPROVAL (approval-store.ts).
 * KEYS: record, approval, approvals, approvalsDue, audit, recordIndex, grantIndex (entitlements only)
 * ARGV: keyExpireAtMs, approvalCreatedAtMs, approvalExpiresAtMs, approvalId, recordId, auditEntry,
 *       recordExpiresAtMs, recordFieldCount, recordFields..., approvalFields...
 */
export const PROPOSE_RECORD = luaScript(`
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 'exists' end
local n = tonumber(ARGV[8])
redis.call('HSET', KEYS[1], unpack(ARGV, 9, 8 + n))
redis.call('HSET', KEYS[2], unpack(ARGV, 9 + n))
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
redis.call('PEXPIREAT', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[6], ARGV[7], ARGV[5])
if #KEYS >= 7 then redis.call('ZADD', KEYS[7], ARGV[7], ARGV[5]) end
redis.call('XADD', KEYS[5], '*', 'event', ARGV[6])
return 'ok'`);

/**
 * Revokes a record once, with its audit event. Answers 'ok', 'missing' or 'revoked' (already).
 * KEYS: record, audit   ARGV: atMs, by, reason, auditEntry
 */
export const REVOKE_RECORD = luaScript(`
local a = redis.call('HMGET', KEYS[1], 'id', 'revokedAtMs')
if not a[1] then return 'missing' end
if a[2] then return 'revoked' end
redis.call('HSET', KEYS[1], 'revokedAtMs', ARGV[1], 'revokedBy', ARGV[2], 'revokeReason', ARGV[3])
redis.call('XADD', KEYS[2], '*', 'event', ARGV[4])
return 'ok'`);

/**
 * Moves an unrevoked, unexpired entitlement's expiry, with its audit event; the record, its approval and
 * the index entries follow the new expiry. Answers 'ok', 'missing', 'revoked' or 'expired'.
 * KEYS: entitlement, entitlements, grantEntitlements, approval, audit
 * ARGV: nowMs, expiresAtMs, by, reason, keyExpireAtMs, auditEntry, id
 */
export const RECERTIFY_ENTITLEMENT = luaScript(`
local a = redis.call('HMGET', KEYS[1], 'id', 'revokedAtMs', 'expiresAtMs')
if not a[1] then return 'missing' end
if a[2] then return 'revoked' end
if tonumber(a[3]) <= tonumber(ARGV[1]) then return 'expired' end
redis.call('HSET', KEYS[1], 'expiresAtMs', ARGV[2], 'recertifiedAtMs', ARGV[1], 'recertifiedBy', ARGV[3],
  'recertifyReason', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[7])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[7])
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
redis.call('PEXPIREAT', KEYS[4], ARGV[5])
redis.call('XADD', KEYS[5], '*', 'event', ARGV[6])
return 'ok'`);
