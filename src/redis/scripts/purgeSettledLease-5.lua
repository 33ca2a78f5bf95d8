--[[
Deletes one settled lease past the retention cut-off, with its index entries. The caller read the lease's
task, identity and grant to name the index keys; the lease is checked again here (still settled, still older
than the cut-off) so a lease restored or re-settled meanwhile is never deleted.
KEYS: settled, lease, taskLeases, identityLeases, grantLeases
ARGV: id, cutoffMs
Answers: 1 (purged) | 0 (left alone)
]]
local settledAt = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not settledAt or tonumber(settledAt) > tonumber(ARGV[2]) then return 0 end
local state = redis.call('HGET', KEYS[2], 'state')
if state and state ~= 'revoked' and state ~= 'expired' and state ~= 'force-closed' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
