--[[
Takes the leases due by now (score <= ARGV[1]) off the front of the due index, at most ARGV[3] of them, and
moves each one's due time on to ARGV[2]: the scheduler queues their jobs next, and a lease whose job is lost
(a crash between this script and the add, a failover) comes due again then and is queued again. A lease
that settles leaves the index (settleLease), so only an unsettled one ever comes back.
KEYS: due
ARGV: nowMs, dueAgainAtMs, limit
Answers: the lease ids claimed, soonest due first
]]
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], id)
end
return ids
