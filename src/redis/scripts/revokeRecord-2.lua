--[[
Revokes an enrolment or entitlement once, with its audit event.
KEYS: record, audit
ARGV: atMs, by, reason, auditEntry
Answers: ok | missing | revoked (already)
]]
local a = redis.call('HMGET', KEYS[1], 'id', 'revokedAtMs')
if not a[1] then return 'missing' end
if a[2] then return 'revoked' end
redis.call('HSET', KEYS[1], 'revokedAtMs', ARGV[1], 'revokedBy', ARGV[2], 'revokeReason', ARGV[3])
redis.call('XADD', KEYS[2], '*', 'event', ARGV[4])
return 'ok'
