--[[
Writes a proposed record (enrolment or entitlement), the approval it waits on, their index entries and the
`approval.requested` audit event in one step: no record exists without its approval and its audit event.
KEYS: record, approval, approvals, approvalsDue, audit, recordIndex[, grantIndex (entitlements only)]
ARGV: keyExpireAtMs, approvalCreatedAtMs, approvalExpiresAtMs, approvalId, recordId, auditEntry,
      recordExpiresAtMs, recordFieldCount, recordFields..., approvalFields...
Answers: ok | exists
]]
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
return 'ok'
