--[[
Writes down an expiry that has already happened (pending past its deadline, or an approved step-up not used in
time), with its `approval.expired` audit event; anything else just leaves the due index.
KEYS: approval, due, audit
ARGV: id, nowMs, auditEntry
Answers: expired | not-due | missing | the status that keeps it
]]
local a = redis.call('HMGET', KEYS[1], 'status', 'expiresAtMs', 'kind')
if not a[1] then redis.call('ZREM', KEYS[2], ARGV[1]) return 'missing' end
local lapses = a[1] == 'pending' or (a[1] == 'approved' and a[3] == 'step-up')
if not lapses then redis.call('ZREM', KEYS[2], ARGV[1]) return a[1] end
if tonumber(a[2]) > tonumber(ARGV[2]) then return 'not-due' end
redis.call('HSET', KEYS[1], 'status', 'expired')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[3], '*', 'event', ARGV[3])
return 'expired'
