--[[
Writes a lease, its three indexes, its due-index entry and the task's active count in one atomic step, only
if the task is still open, the lease cap is not reached and the lease does not exist yet, and, in the same
step, the audit entry that records it: a lease never exists without its `credential.issued`.
Quotas (0 = none): unsettled leases in total, per task, per identity. A step-up approval, when one is
presented (ARGV[8] ~= ''), is used up in the same step: it must still be approved and unexpired, so two calls
racing with one approval get one lease between them. Without one, KEYS[9] is never touched.
KEYS: lease, task, taskLeases, identityLeases, grantLeases, due, audit, identityUnsettled, approval, approvalsDue
ARGV: cap, nowMs, expiresAtMs, id, auditEntry, identityCap, taskCap, approvalId ('' = none), fields...
Answers: ok | exists | task_not_open | cap | task_cap | identity_cap | approval_<status> | approval_expired
]]
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
if redis.call('HGET', KEYS[2], 'state') ~= 'open' then return 'task_not_open' end
if tonumber(redis.call('HGET', KEYS[2], 'expiresAtMs')) <= tonumber(ARGV[2]) then return 'task_not_open' end
if redis.call('ZCARD', KEYS[6]) >= tonumber(ARGV[1]) then return 'cap' end
local taskCap = tonumber(ARGV[7])
if taskCap > 0 and tonumber(redis.call('HGET', KEYS[2], 'activeLeases') or '0') >= taskCap then return 'task_cap' end
local identityCap = tonumber(ARGV[6])
if identityCap > 0 and redis.call('SCARD', KEYS[8]) >= identityCap then return 'identity_cap' end
if ARGV[8] ~= '' then
  local a = redis.call('HMGET', KEYS[9], 'status', 'expiresAtMs')
  if a[1] ~= 'approved' then return 'approval_' .. (a[1] or 'missing') end
  if tonumber(a[2]) <= tonumber(ARGV[2]) then return 'approval_expired' end
  redis.call('HSET', KEYS[9], 'status', 'used', 'usedAtMs', ARGV[2], 'leaseId', ARGV[4])
  redis.call('ZREM', KEYS[10], ARGV[8])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
redis.call('SADD', KEYS[3], ARGV[4])
local taskTtl = redis.call('PTTL', KEYS[2])
if taskTtl > 0 then redis.call('PEXPIRE', KEYS[3], taskTtl) end
redis.call('SADD', KEYS[4], ARGV[4])
redis.call('SADD', KEYS[5], ARGV[4])
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[4])
redis.call('HINCRBY', KEYS[2], 'activeLeases', 1)
redis.call('SADD', KEYS[8], ARGV[4])
redis.call('XADD', KEYS[7], '*', 'event', ARGV[5])
return 'ok'
