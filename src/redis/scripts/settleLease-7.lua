--[[
Settles a lease (revoked, expired or force-closed) once: its state and what revocation did, out of the due and
irrevocable indexes, into the settled index (purged after the retention period), the task's active count down,
and, in the same step, its audit entry (`lease.settled` or `lease.force_closed`): a lease is never settled
without it, and a settlement run again (a second worker, a replay after a failover) appends nothing.
KEYS: lease, due, irrevocable, task, settled, identityUnsettled, audit
ARGV: id, state, revocation, nowMs, reason, revocationDetail, auditEntry
Answers: settled | already | missing
]]
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state == 'revoked' or state == 'expired' or state == 'force-closed' then return 'already' end
-- The audit entry first: should it fail (an argument missing), nothing else has been written.
redis.call('XADD', KEYS[7], '*', 'event', ARGV[7])
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'revocation', ARGV[3], 'revokedAtMs', ARGV[4])
if ARGV[5] ~= '' and not redis.call('HGET', KEYS[1], 'revokeReason') then
  redis.call('HSET', KEYS[1], 'revokeReason', ARGV[5])
end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'revocationDetail', ARGV[6]) end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('HINCRBY', KEYS[4], 'activeLeases', -1) end
redis.call('SREM', KEYS[6], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[1])
return 'settled'
