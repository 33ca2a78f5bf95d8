--[[
Records a revocation that failed for good (until the sweeper's next try at retryAtMs).
KEYS: lease, due, irrevocable
ARGV: id, nowMs, retryAtMs, error
Answers: became (it was not irrevocable before: on-call hears of it once) | still | settled (meanwhile)
]]
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'revoked' or state == 'expired' or state == 'force-closed' then return 'settled' end
redis.call('HSET', KEYS[1], 'state', 'irrevocable', 'lastError', ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[3], 'NX', ARGV[2], ARGV[1])
if state == 'irrevocable' then return 'still' end
return 'became'
