--[[
Decides a pending approval once, with its audit event. Separation of duties is checked here too, inside the
same atomic step as the write: the approver is never the requester.
KEYS: approval, due, audit
ARGV: status (approved|denied), by, atMs, reason, expiresAtMs after the decision ('' = leaves the due index),
      auditEntry
Answers: ok | missing | self | expired | the status that prevented it
]]
local a = redis.call('HMGET', KEYS[1], 'status', 'expiresAtMs', 'requesterIssuer', 'requesterSubject', 'id')
if not a[1] then return 'missing' end
if a[3] .. '/' .. a[4] == ARGV[2] then return 'self' end
if a[1] ~= 'pending' then return a[1] end
if tonumber(a[2]) <= tonumber(ARGV[3]) then return 'expired' end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'decidedBy', ARGV[2], 'decidedAtMs', ARGV[3], 'decisionReason', ARGV[4])
if ARGV[5] == '' then
  redis.call('ZREM', KEYS[2], a[5])
else
  redis.call('HSET', KEYS[1], 'expiresAtMs', ARGV[5])
  redis.call('ZADD', KEYS[2], ARGV[5], a[5])
end
redis.call('XADD', KEYS[3], '*', 'event', ARGV[6])
return 'ok'
