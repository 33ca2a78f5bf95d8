--[[
Writes an approval request, its index entries and its `approval.requested` audit event in one step, so no
request exists that the audit log does not show. A step-up request (KEYS[5] given) first looks for an open
request of its task that covers it (same grant, at least this TTL, pending or approved and not past its
deadline) and answers `open:<id>` instead, so calls racing to ask open one request between them. The caller
read the task's requests and passes their keys (KEYS[6..]) and ids; when the set changed since, it answers
`stale` and the caller reads again, so no request is ever overlooked.
KEYS: approval, index, due, audit[, taskApprovals, the task's approvals...]
ARGV: createdAtMs, expiresAtMs, id, auditEntry, keyExpireAtMs, grant, ttlSeconds, n (ids passed), ids..., fields...
Answers: ok | exists | stale | open:<id>
]]
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
local n = tonumber(ARGV[8])
if #KEYS >= 5 then
  local passed = {}
  for i = 1, n do passed[ARGV[8 + i]] = true end
  local members = redis.call('SMEMBERS', KEYS[5])
  if #members ~= n then return 'stale' end
  for _, member in ipairs(members) do
    if not passed[member] then return 'stale' end
  end
  for i = 1, n do
    local o = redis.call('HMGET', KEYS[5 + i], 'status', 'expiresAtMs', 'grant', 'ttlSeconds')
    if (o[1] == 'pending' or o[1] == 'approved') and tonumber(o[2]) > tonumber(ARGV[1])
      and o[3] == ARGV[6] and tonumber(o[4]) >= tonumber(ARGV[7]) then
      return 'open:' .. ARGV[8 + i]
    end
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 9 + n))
redis.call('PEXPIREAT', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
if #KEYS >= 5 then
  redis.call('SADD', KEYS[5], ARGV[3])
  redis.call('PEXPIREAT', KEYS[5], ARGV[5])
end
redis.call('XADD', KEYS[4], '*', 'event', ARGV[4])
return 'ok'
