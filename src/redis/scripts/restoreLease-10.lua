--[[
Re-applies a lease write after the primary changed (failover, restart): the credential was returned, so the
lease must exist, whatever became of its task meanwhile. Takes exactly createLease's KEYS and ARGV. A lease
that is there (in any state) is left alone. One that is missing is written back with its indexes, its due
entry and its `credential.issued` event; when its task is no longer open (completed, expired, or lost in the
same failover) it is written as revoking and due now, so the sweeper revokes it at once. Quotas, caps and the
approval are not checked again: they were checked when the credential was issued. A step-up approval the
lease used (ARGV[8] ~= '') is used up again if the failover took that too, so it cannot buy a second lease.
KEYS: lease, task, taskLeases, identityLeases, grantLeases, due, audit, identityUnsettled, approval, approvalsDue
ARGV: cap, nowMs, expiresAtMs, id, auditEntry, identityCap, taskCap, approvalId, fields...
Answers: exists | restored | restored_revoking
]]
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
local open = redis.call('HGET', KEYS[2], 'state') == 'open'
  and tonumber(redis.call('HGET', KEYS[2], 'expiresAtMs') or '0') > tonumber(ARGV[2])
local dueAt = ARGV[3]
if not open then
  redis.call('HSET', KEYS[1], 'state', 'revoking', 'revokeReason', 'restored after a failover: its task is not open')
  dueAt = ARGV[2]
end
redis.call('SADD', KEYS[3], ARGV[4])
local taskTtl = redis.call('PTTL', KEYS[2])
if taskTtl > 0 then redis.call('PEXPIRE', KEYS[3], taskTtl) end
redis.call('SADD', KEYS[4], ARGV[4])
redis.call('SADD', KEYS[5], ARGV[4])
redis.call('ZADD', KEYS[6], dueAt, ARGV[4])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HINCRBY', KEYS[2], 'activeLeases', 1) end
redis.call('SADD', KEYS[8], ARGV[4])
redis.call('XADD', KEYS[7], '*', 'event', ARGV[5])
if ARGV[8] ~= '' and redis.call('HGET', KEYS[9], 'status') == 'approved' then
  redis.call('HSET', KEYS[9], 'status', 'used', 'usedAtMs', ARGV[2], 'leaseId', ARGV[4])
  redis.call('ZREM', KEYS[10], ARGV[8])
end
if open then return 'restored' end
return 'restored_revoking'
