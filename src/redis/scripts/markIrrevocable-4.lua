--[[
Records a revocation that failed for good (until the sweeper's next try at retryAtMs): one attempt more, its
error, and in the same step its audit entry (`lease.irrevocable`, one per failed last attempt: this script is
never replayed). A lease settled meanwhile is left alone and nothing is appended.
KEYS: lease, due, irrevocable, audit
ARGV: id, nowMs, retryAtMs, error, auditEntry
Answers: became (it was not irrevocable before: on-call hears of it once) | still | settled (meanwhile)
]]
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'revoked' or state == 'expired' or state == 'force-closed' then return 'settled' end
-- The audit entry first: should it fail (an argument missing), nothing else has been written.
redis.call('XADD', KEYS[4], '*', 'event', ARGV[5])
redis.call('HSET', KEYS[1], 'state', 'irrevocable', 'lastError', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], 'NX', ARGV[2], ARGV[1])
if state == 'irrevocable' then return 'still' end
return 'became'
