--[[
Moves an unrevoked, unexpired entitlement's expiry, with its audit event; the record, its approval and the
index entries follow the new expiry.
KEYS: entitlement, entitlements, grantEntitlements, approval, audit
ARGV: nowMs, expiresAtMs, by, reason, keyExpireAtMs, auditEntry, id
Answers: ok | missing | revoked | expired
]]
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
return 'ok'
